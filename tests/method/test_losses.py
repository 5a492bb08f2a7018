"""Diffusion-DPO loss on per-sample errors, against numbers worked out by hand.

logsigmoid values used below: -log sigmoid(0) = log 2 = 0.693147;
-log sigmoid(1) = log(1 + e^-1) = 0.313262; -log sigmoid(-1) = log(1 + e) = 1.313262;
-log sigmoid(2) = log(1 + e^-2) = 0.126928; sigmoid(-1) = 0.268941.
"""

import math

import pytest
import torch

from refbench.method.losses import diffusion_dpo_loss, per_sample_error, sft_loss


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_policy_equal_to_reference_gives_log2_and_zero_margin():
    """Same errors for policy and reference: every margin is 0, logit 0, loss log 2."""
    errors_w, errors_l = t(0.3, 0.7, 0.1), t(0.2, 0.9, 0.4)
    out = diffusion_dpo_loss(errors_w, errors_l, errors_w.clone(), errors_l.clone(), beta=5000.0)
    assert out.loss.item() == pytest.approx(math.log(2), abs=1e-12)
    assert torch.equal(out.margin, torch.zeros(3, dtype=torch.float64))
    assert out.accuracy == 0.0  # a zero margin is not a correct preference


def test_known_margin_gives_known_loss():
    """model_err = (w 0.1, l 0.3), ref_err = (0.2, 0.2):
    r_w = -(0.1 - 0.2) = 0.1, r_l = -(0.3 - 0.2) = -0.1, margin 0.2;
    beta 10 -> logit 0.5 * 10 * 0.2 = 1.0 -> loss log(1 + e^-1) = 0.313262."""
    out = diffusion_dpo_loss(t(0.1), t(0.3), t(0.2), t(0.2), beta=10.0)
    assert out.reward_w.item() == pytest.approx(0.1)
    assert out.reward_l.item() == pytest.approx(-0.1)
    assert out.margin.item() == pytest.approx(0.2)
    assert out.logits.item() == pytest.approx(1.0)
    assert out.loss.item() == pytest.approx(0.313262, abs=1e-6)
    assert out.accuracy == 1.0


def test_beta_and_weight_scale_the_logit():
    """Margin 0.2: beta 10 with lambda 2, and beta 20 with lambda 1, both give logit 2.0,
    loss log(1 + e^-2) = 0.126928. A per-sample weight scales each pair's logit alone."""
    args = (t(0.1), t(0.3), t(0.2), t(0.2))
    weighted = diffusion_dpo_loss(*args, beta=10.0, weight=torch.tensor([2.0], dtype=torch.float64))
    doubled_beta = diffusion_dpo_loss(*args, beta=20.0)
    assert weighted.logits.item() == pytest.approx(2.0)
    assert doubled_beta.logits.item() == pytest.approx(2.0)
    assert weighted.loss.item() == pytest.approx(0.126928, abs=1e-6)
    # Two identical pairs with lambda (1, 2): logits (1, 2), mean loss (0.313262 + 0.126928) / 2 = 0.220095.
    pair = diffusion_dpo_loss(t(0.1, 0.1), t(0.3, 0.3), t(0.2, 0.2), t(0.2, 0.2), beta=10.0, weight=t(1.0, 2.0))
    assert pair.logits.tolist() == pytest.approx([1.0, 2.0])
    assert pair.loss.item() == pytest.approx(0.220095, abs=1e-6)
    # The margin (implicit reward) does not depend on beta or lambda.
    assert weighted.margin.item() == pytest.approx(doubled_beta.margin.item())


def test_batch_mean_and_accuracy():
    """Margins (0.2, -0.2) with beta 10: logits (1, -1), losses (0.313262, 1.313262), mean 0.813262;
    accuracy 1/2."""
    out = diffusion_dpo_loss(t(0.1, 0.3), t(0.3, 0.1), t(0.2, 0.2), t(0.2, 0.2), beta=10.0)
    assert out.margin.tolist() == pytest.approx([0.2, -0.2])
    assert out.loss.item() == pytest.approx(0.813262, abs=1e-6)
    assert out.accuracy == 0.5


def test_gradient_flows_to_the_policy_only_with_the_right_value():
    """loss = -log sigmoid(z), z = 0.5 * beta * lambda * (-(m_w - r_w) + (m_l - r_l)).
    dloss/dm_w = -sigmoid(-z) * dz/dm_w = sigmoid(-z) * 0.5 * beta * lambda;
    beta 10, lambda 1, z 1: 5 * sigmoid(-1) = 5 * 0.268941 = 1.344707; dloss/dm_l = -1.344707."""
    model_w, model_l = t(0.1).requires_grad_(), t(0.3).requires_grad_()
    ref_w, ref_l = t(0.2).requires_grad_(), t(0.2).requires_grad_()
    diffusion_dpo_loss(model_w, model_l, ref_w, ref_l, beta=10.0).loss.backward()
    assert model_w.grad.item() == pytest.approx(1.344707, abs=1e-6)
    assert model_l.grad.item() == pytest.approx(-1.344707, abs=1e-6)
    assert ref_w.grad is None and ref_l.grad is None


def test_sft_loss_and_per_sample_error():
    """SFT: mean of winners' errors (0.1 + 0.3) / 2 = 0.2.
    per_sample_error of prediction [1, 2, 3, 4] against 0: (1 + 4 + 9 + 16) / 4 = 7.5;
    of all-ones against zeros: 1."""
    assert sft_loss(t(0.1, 0.3)).item() == pytest.approx(0.2)
    prediction = torch.stack([torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 2), torch.ones(1, 2, 2)])
    errors = per_sample_error(prediction, torch.zeros_like(prediction))
    assert errors.tolist() == pytest.approx([7.5, 1.0])


@pytest.mark.parametrize("bad", [dict(beta=0.0), dict(beta=-1.0)])
def test_rejects_bad_beta(bad):
    with pytest.raises(ValueError, match="beta"):
        diffusion_dpo_loss(t(0.1), t(0.2), t(0.1), t(0.2), **bad)


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        diffusion_dpo_loss(t(0.1, 0.2), t(0.2), t(0.1), t(0.2), beta=1.0)
    with pytest.raises(ValueError, match="weight"):
        diffusion_dpo_loss(t(0.1, 0.2), t(0.2, 0.1), t(0.1, 0.2), t(0.2, 0.1), beta=1.0, weight=t(1.0, 1.0, 1.0))
