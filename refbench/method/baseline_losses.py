"""The baselines the paper compares against, as losses on the same inputs as Diffusion-DPO.

Pure math: tensors in, tensors out. Each loss was written from the formula of its official
code (read, not copied); the docstrings give that formula and where refbench differs.
Errors are per image, ``mean over (C, H, W) of (prediction - target)^2``; in a batch of
pairs, winner i and loser i share their noise and timestep (as in Diffusion-DPO).

- ``dspo_loss``: DSPO, Zhu, Xiao & Honavar, ICLR 2025 (huaishengzhu/DSPO, ``train.py``).
  Needs predictions, not only errors: its loss is a score-matching loss on the winners.
- ``diffusion_kto_loss`` / ``kto_image_losses``: Diffusion-KTO, Li et al., NeurIPS 2024
  (jacklishufan/diffusion-kto, ``train_kto_sd_v1.5.py``). Per-image desirable/undesirable
  labels; from pairs, winners are desirable and losers undesirable.
- ``mapo_loss``: MaPO, Hong et al. 2024 (mapo-t2i/mapo, ``utils.py`` ``compute_loss``).
  Reference-free: it takes the policy's errors only.

Every loss takes ``weight``, lambda(t) per pair (or per image for KTO), that multiplies its
temperature; ``None`` is 1, the published losses. The returned ``PreferenceLoss`` has the
same fields as Diffusion-DPO's, so the trainer logs loss, accuracy and margin uniformly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .losses import PreferenceLoss, _check_same_shape, per_sample_error

__all__ = ["dspo_loss", "diffusion_kto_loss", "kto_image_losses", "mapo_loss", "mapo_odds"]


def _scale(beta: float, weight: torch.Tensor | float | None, shape: torch.Size) -> torch.Tensor | float:
    """beta * lambda(t): a scalar, or one value per row of ``shape``."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if weight is None:
        return beta
    if isinstance(weight, torch.Tensor) and weight.shape not in ((), shape):
        raise ValueError(f"weight must be a scalar or have shape {tuple(shape)}, got {tuple(weight.shape)}")
    return beta * weight


def _summary(
    loss: torch.Tensor, reward_w: torch.Tensor, reward_l: torch.Tensor, logits: torch.Tensor
) -> PreferenceLoss:
    margin = (reward_w - reward_l).detach()
    return PreferenceLoss(
        loss=loss,
        margin=margin,
        accuracy=(margin > 0).float().mean(),
        reward_w=reward_w.detach(),
        reward_l=reward_l.detach(),
        logits=logits.detach(),
    )


def dspo_loss(
    model_pred_w: torch.Tensor,
    model_pred_l: torch.Tensor,
    ref_pred_w: torch.Tensor,
    ref_pred_l: torch.Tensor,
    target_w: torch.Tensor,
    target_l: torch.Tensor,
    *,
    beta: float,
    weight: torch.Tensor | float | None = None,
) -> PreferenceLoss:
    """Direct Score Preference Optimization (SD1.5 form of the official ``train.py``).

    With errors e = mean_(C,H,W) (pred - target)^2 and the Diffusion-DPO margin
    ``margin = -(e_theta(w) - e_ref(w)) + (e_theta(l) - e_ref(l))`` (= r_t(w) - r_t(l)):

        logits = 0.5 * beta * margin                  (the official ``inside_term``)
        pull   = beta * (1 - sigmoid(logits))         (one number per pair)
        loss   = mean over pairs and (C,H,W) of
                 ((eps_theta(w) - eps) - pull * (eps_theta(w) - eps_ref(w)))^2

    A denoising loss on the winners whose target moves along the policy-minus-reference
    score direction by ``pull``. Gradients flow through the policy in every term (the
    residual, the pull direction and the sigmoid), as in the official code; the reference is
    a constant. When policy == reference the loss is the winners' SFT loss and its gradient
    is (1 - beta / 2) times SFT's.

    Differences from the official code: ``weight`` = lambda(t) multiplies beta in both places
    (None = the official loss); the official SDXL branch (a different loss, with its SDXL
    beta 1000-5000) is not implemented: this is the SD1.5 form (launcher beta 0.001, README
    search {0.001, 0.01, 0.05}) for every model. Its implicit accuracy is ``inside_term > 0``,
    the same as ``margin > 0`` here.
    """
    preds = dict(
        model_pred_w=model_pred_w,
        model_pred_l=model_pred_l,
        ref_pred_w=ref_pred_w,
        ref_pred_l=ref_pred_l,
        target_w=target_w,
        target_l=target_l,
    )
    shapes = {name: tuple(p.shape) for name, p in preds.items()}
    if len(set(shapes.values())) != 1 or model_pred_w.dim() < 2:
        raise ValueError(f"predictions and targets must share one shape (batch, ...), got {shapes}")
    ref_pred_w, ref_pred_l = ref_pred_w.detach().float(), ref_pred_l.detach().float()
    model_pred_w, target_w = model_pred_w.float(), target_w.float()
    reward_w = -(per_sample_error(model_pred_w, target_w) - per_sample_error(ref_pred_w, target_w))
    reward_l = -(per_sample_error(model_pred_l, target_l) - per_sample_error(ref_pred_l, target_l))
    beta_t = _scale(beta, weight, reward_w.shape)
    logits = 0.5 * beta_t * (reward_w - reward_l)
    pull = beta_t * torch.sigmoid(-logits)  # 1 - sigmoid(x) = sigmoid(-x)
    view = (-1,) + (1,) * (model_pred_w.dim() - 1)
    residual = (model_pred_w - target_w) - pull.reshape(view) * (model_pred_w - ref_pred_w)
    loss = residual.pow(2).reshape(residual.shape[0], -1).mean(dim=1).mean()
    return _summary(loss, reward_w, reward_l, logits)


def kto_image_losses(
    model_err: torch.Tensor,
    ref_err: torch.Tensor,
    desirable: torch.Tensor,
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    weight: torch.Tensor | float | None = None,
    kl: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Diffusion-KTO per image (default ``--loss kto --halo sigmoid`` of the official code).

        g      = -(e_theta(x) - e_ref(x))                     (implicit reward, as in Eq. 6)
        kl     = max(0, mean over the batch of g), detached   (the reference point z_0)
        z      = s(x) * beta * (g - kl),   s = +1 desirable, -1 undesirable
        loss_x = w(x) * (1 - sigmoid(z)),  w = desirable_weight or undesirable_weight

    Returns (per-image losses, z, kl); the loss to backpropagate is ``losses.mean()``. When
    policy == reference every z is 0 and each image's loss is w / 2 (not log 2: the
    value function is sigmoid, not logsigmoid). ``kl`` may be given (e.g. averaged over
    processes); otherwise it is estimated from this batch.

    Differences from the official code: ``weight`` = lambda(t) multiplies beta (None = 1);
    the official KL estimate is averaged over processes before the clamp, here it is this
    batch's (passing ``kl`` restores the official form).
    """
    _check_same_shape(model_err=model_err, ref_err=ref_err)
    if desirable.shape != model_err.shape or desirable.dtype != torch.bool:
        raise ValueError(f"desirable must be a bool tensor of shape {tuple(model_err.shape)}")
    if desirable_weight <= 0 or undesirable_weight <= 0:
        raise ValueError(
            f"desirable_weight and undesirable_weight must be > 0, got {desirable_weight}, {undesirable_weight}"
        )
    reward = -(model_err - ref_err.detach())
    if kl is None:
        kl = reward.detach().mean().clamp(min=0)
    kl = torch.as_tensor(kl, dtype=reward.dtype, device=reward.device).detach()
    sign = desirable.to(reward.dtype) * 2 - 1
    logits = sign * _scale(beta, weight, reward.shape) * (reward - kl)
    class_weight = torch.where(desirable, desirable_weight, undesirable_weight).to(reward.dtype)
    return class_weight * torch.sigmoid(-logits), logits, kl


def diffusion_kto_loss(
    model_err_w: torch.Tensor,
    model_err_l: torch.Tensor,
    ref_err_w: torch.Tensor,
    ref_err_l: torch.Tensor,
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    weight: torch.Tensor | float | None = None,
    kl: torch.Tensor | float | None = None,
) -> PreferenceLoss:
    """Diffusion-KTO trained from pairs: winners desirable, losers undesirable (see
    ``kto_image_losses`` for the formula). The batch's KL estimate uses all 2B images.

    ``weight`` is lambda(t) per pair (a pair's two images share t). ``logits`` holds z per
    image, winners then losers. Margin and accuracy are the pairwise ones every method logs,
    r_t(w) - r_t(l) > 0; the official code logs instead the share of images with z > 0.

    Differences from the official code, besides those of ``kto_image_losses``: the official
    data sampler draws desirable images with probability ``positive_ratio`` (0.8 in its
    launcher) and gives each image its own noise and timestep; from pairs the split is 50/50
    and a pair's images share noise and t. ``desirable_weight`` / ``undesirable_weight`` =
    1.6 / 0.4 reproduce a 0.8 / 0.2 split in expectation (0.5 * 1.6 = 0.8, 0.5 * 0.4 = 0.2).
    """
    _check_same_shape(model_err_w=model_err_w, model_err_l=model_err_l, ref_err_w=ref_err_w, ref_err_l=ref_err_l)
    pairs = model_err_w.shape[0]
    per_image = None
    if weight is not None:
        _scale(beta, weight, model_err_w.shape)  # check the per-pair shape before repeating
        per_image = weight.repeat(2) if isinstance(weight, torch.Tensor) and weight.dim() == 1 else weight
    desirable = torch.arange(2 * pairs, device=model_err_w.device) < pairs
    losses, logits, _ = kto_image_losses(
        torch.cat([model_err_w, model_err_l]),
        torch.cat([ref_err_w, ref_err_l]),
        desirable,
        beta=beta,
        desirable_weight=desirable_weight,
        undesirable_weight=undesirable_weight,
        weight=per_image,
        kl=kl,
    )
    reward_w = -(model_err_w - ref_err_w.detach())
    reward_l = -(model_err_l - ref_err_l.detach())
    return _summary(losses.mean(), reward_w, reward_l, logits)


def mapo_odds(err: torch.Tensor, snr: float) -> torch.Tensor:
    """MaPO's per-image term f(x) = x / (exp(x) - 1) at x = snr * err (f(0) = 1, the limit).

    f decreases from 1 at x = 0, so a smaller error gives a larger f. Near 0 the series
    1 - x/2 + x^2/12 avoids 0/0."""
    x = snr * err
    small = x.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(x), x)
    return torch.where(small, 1 - x / 2 + x * x / 12, safe / torch.expm1(safe))


def mapo_loss(
    model_err_w: torch.Tensor,
    model_err_l: torch.Tensor,
    *,
    beta: float,
    snr: float,
    num_timesteps: int,
    weight: torch.Tensor | float | None = None,
) -> PreferenceLoss:
    """Margin-aware Preference Optimization (official ``compute_loss``), reference-free.

        f(e)     = snr * e / (exp(snr * e) - 1)            (``mapo_odds``)
        log_odds = f(e_theta(w)) - f(e_theta(l))
        loss     = mean(e_theta(w)) - beta * mean(logsigmoid(T * log_odds))

    with T = the number of training timesteps (1000 for SD) and beta the weight of the
    margin term (official ``--beta_mapo 0.1``, ``--snr_value 0.5``). When the winner's and
    loser's errors are equal the loss is mean(e_theta(w)) + beta * log 2.

    Logged quantities: reward_x = f(e_theta(x)), margin = log_odds, logits = T * log_odds;
    accuracy = share of pairs with log_odds > 0, i.e. e_theta(w) < e_theta(l).
    Differences from the official code: ``weight`` = lambda(t) multiplies T (None = 1).
    """
    _check_same_shape(model_err_w=model_err_w, model_err_l=model_err_l)
    if snr <= 0:
        raise ValueError(f"snr must be > 0, got {snr}")
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    reward_w, reward_l = mapo_odds(model_err_w, snr), mapo_odds(model_err_l, snr)
    logits = _scale(float(num_timesteps), weight, reward_w.shape) * (reward_w - reward_l)
    loss = model_err_w.mean() - beta * F.logsigmoid(logits).mean()
    return _summary(loss, reward_w, reward_l, logits)
