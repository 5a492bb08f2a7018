"""The baselines (DSPO, Diffusion-KTO, MaPO): losses against numbers worked out by hand, their
config, the reference-free model set, and short training runs in the one trainer.

Values used below: sigmoid(1) = 0.731059, sigmoid(-1) = 0.268941, sigmoid(2) = 0.880797,
sigmoid(-2) = 0.119203, sigmoid(-3) = 0.047426; ln 2 = 0.693147, ln 3 = 1.098612.
"""

import math

import pytest
import torch

from refbench.config import load_config
from refbench.errors import ConfigError
from refbench.method.baseline_losses import diffusion_kto_loss, dspo_loss, kto_image_losses, mapo_loss, mapo_odds


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def img(*values):
    """One 1x1x1 'image' per value: (B, 1, 1, 1), so an error is the squared difference."""
    return t(*values).reshape(-1, 1, 1, 1)


# -- DSPO ----------------------------------------------------------------------------------
def test_dspo_known_values():
    """Pair 1: target 0; policy winner 0, reference winner 1 -> e_theta(w) = 0, e_ref(w) = 1;
    the loser's policy and reference agree (0.5), so margin = -(0 - 1) + 0 = 1.
    beta 2: logit 0.5 * 2 * 1 = 1, pull 2 * (1 - sigmoid(1)) = 2 * 0.268941 = 0.537883;
    residual (0 - 0) - 0.537883 * (0 - 1) = 0.537883, loss 0.537883^2 = 0.289318.
    Pair 2: policy == reference (winner 0.5, loser 0.5): logit 0, residual 0.5, loss 0.25.
    Batch mean (0.289318 + 0.25) / 2 = 0.269659; accuracy 1/2 (a zero margin is not a win)."""
    zeros = img(0.0, 0.0)
    out = dspo_loss(img(0.0, 0.5), img(0.5, 0.5), img(1.0, 0.5), img(0.5, 0.5), zeros, zeros, beta=2.0)
    assert out.margin.tolist() == pytest.approx([1.0, 0.0])
    assert out.logits.tolist() == pytest.approx([1.0, 0.0])
    assert out.loss.item() == pytest.approx(0.269659, abs=1e-6)
    assert out.accuracy == 0.5
    single = dspo_loss(img(0.0), img(0.5), img(1.0), img(0.5), img(0.0), img(0.0), beta=2.0)
    assert single.loss.item() == pytest.approx(0.289318, abs=1e-6)
    # lambda(t) = 2 with beta 1 is beta 2.
    weighted = dspo_loss(img(0.0), img(0.5), img(1.0), img(0.5), img(0.0), img(0.0), beta=1.0, weight=t(2.0))
    assert weighted.loss.item() == pytest.approx(single.loss.item())


def test_dspo_policy_equal_to_reference_is_sft_on_winners_with_scaled_gradient():
    """Policy == reference: the pull direction is 0, so the loss is the winners' SFT loss
    (0.5^2 = 0.25, 0.2^2 = 0.04 -> 0.145) and the margin 0. The gradient is (1 - beta/2) times
    SFT's: d/dpred of mean((pred - 0)^2) over 2 pairs is 2 * pred / 2 = pred -> (0.5, 0.2);
    beta 1 halves it: (0.25, 0.1). Losers and the reference get none."""
    model_w, model_l = img(0.5, 0.2).requires_grad_(), img(0.3, 0.9).requires_grad_()
    ref_w, ref_l = img(0.5, 0.2).requires_grad_(), img(0.3, 0.9).requires_grad_()
    zeros = img(0.0, 0.0)
    out = dspo_loss(model_w, model_l, ref_w, ref_l, zeros, zeros, beta=1.0)
    assert out.loss.item() == pytest.approx(0.145)
    assert out.margin.tolist() == [0.0, 0.0]
    out.loss.backward()
    assert model_w.grad.flatten().tolist() == pytest.approx([0.25, 0.1])
    assert model_l.grad.flatten().tolist() == pytest.approx([0.0, 0.0])
    assert ref_w.grad is None and ref_l.grad is None


def test_dspo_rejects_mismatched_shapes_and_bad_beta():
    with pytest.raises(ValueError, match="shape"):
        dspo_loss(img(0.0, 1.0), img(0.0), img(0.0), img(0.0), img(0.0), img(0.0), beta=1.0)
    with pytest.raises(ValueError, match="beta"):
        dspo_loss(img(0.0), img(0.0), img(0.0), img(0.0), img(0.0), img(0.0), beta=0.0)


# -- Diffusion-KTO ---------------------------------------------------------------------------
def test_kto_known_values_and_class_weights():
    """g = -(e_theta - e_ref): winner -(0.1 - 0.2) = 0.1, loser -(0.3 - 0.2) = -0.1; KL estimate
    max(0, mean(0.1, -0.1)) = 0. beta 10: z_w = +10 * 0.1 = 1, z_l = -10 * -0.1 = 1; each image's
    loss 1 - sigmoid(1) = 0.268941, mean 0.268941. Weights 2 / 1: (2 + 1) * 0.268941 / 2 = 0.403412."""
    out = diffusion_kto_loss(t(0.1), t(0.3), t(0.2), t(0.2), beta=10.0)
    assert out.logits.tolist() == pytest.approx([1.0, 1.0])
    assert out.loss.item() == pytest.approx(0.268941, abs=1e-6)
    assert out.margin.tolist() == pytest.approx([0.2]) and out.accuracy == 1.0
    weighted = diffusion_kto_loss(
        t(0.1), t(0.3), t(0.2), t(0.2), beta=10.0, desirable_weight=2.0, undesirable_weight=1.0
    )
    assert weighted.loss.item() == pytest.approx(0.403412, abs=1e-6)


def test_kto_reference_point_is_the_clamped_batch_mean():
    """g = (0.3, -0.1): KL max(0, 0.1) = 0.1; z_w = 10 * (0.3 - 0.1) = 2, z_l = -10 * (-0.1 - 0.1) = 2;
    loss 1 - sigmoid(2) = 0.119203. g = (0.1, -0.3): mean -0.1 clamps to 0; z = (1, 3);
    losses (0.268941, 0.047426), mean 0.158184. A given kl replaces the estimate."""
    positive = diffusion_kto_loss(t(0.1), t(0.3), t(0.4), t(0.2), beta=10.0)
    assert positive.logits.tolist() == pytest.approx([2.0, 2.0])
    assert positive.loss.item() == pytest.approx(0.119203, abs=1e-6)
    clamped = diffusion_kto_loss(t(0.1), t(0.5), t(0.2), t(0.2), beta=10.0)
    assert clamped.logits.tolist() == pytest.approx([1.0, 3.0])
    assert clamped.loss.item() == pytest.approx(0.158184, abs=1e-6)
    given = diffusion_kto_loss(t(0.1), t(0.3), t(0.2), t(0.2), beta=10.0, kl=0.1)  # z = (0, 2)
    assert given.logits.tolist() == pytest.approx([0.0, 2.0])


def test_kto_policy_equal_to_reference_gives_half_the_class_weight():
    """Every g = 0, KL 0, z = 0: each image's loss is w * (1 - sigmoid(0)) = w / 2 (KTO's value
    function is sigmoid, so the identity gives 1/2, not log 2). Weights 1.6 / 0.4: mean 0.5."""
    errors_w, errors_l = t(0.3, 0.7), t(0.2, 0.9)
    out = diffusion_kto_loss(
        errors_w,
        errors_l,
        errors_w.clone(),
        errors_l.clone(),
        beta=1000.0,
        desirable_weight=1.6,
        undesirable_weight=0.4,
    )
    assert out.loss.item() == pytest.approx(0.5)
    assert out.margin.tolist() == [0.0, 0.0]
    losses, logits, kl = kto_image_losses(t(0.1, 0.2), t(0.1, 0.2), torch.tensor([True, False]), beta=5.0)
    assert losses.tolist() == [0.5, 0.5] and logits.tolist() == [0.0, 0.0] and kl.item() == 0.0


def test_kto_gradient_flows_to_the_policy_only_with_a_detached_kl():
    """KL case above (z = 2 for both images, KL 0.1, N = 2 images). loss_x = sigmoid(-z_x) / N;
    dz_w/de_w = -beta with KL held fixed, so dloss/de_w = beta * sigmoid(2) * sigmoid(-2) / 2
    = 10 * (e^2 / (1 + e^2)^2) / 2 = 10 * 0.104994 / 2 = 0.524968, and dloss/de_l = -0.524968.
    Were KL not detached (dKL/de = -1/2), the two would differ."""
    model_w, model_l = t(0.1).requires_grad_(), t(0.3).requires_grad_()
    ref_w, ref_l = t(0.4).requires_grad_(), t(0.2).requires_grad_()
    diffusion_kto_loss(model_w, model_l, ref_w, ref_l, beta=10.0).loss.backward()
    assert model_w.grad.item() == pytest.approx(0.524968, abs=1e-6)
    assert model_l.grad.item() == pytest.approx(-0.524968, abs=1e-6)
    assert ref_w.grad is None and ref_l.grad is None


def test_kto_rejects_bad_inputs():
    with pytest.raises(ValueError, match="desirable_weight"):
        diffusion_kto_loss(t(0.1), t(0.3), t(0.2), t(0.2), beta=1.0, desirable_weight=0.0)
    with pytest.raises(ValueError, match="desirable must be a bool"):
        kto_image_losses(t(0.1, 0.2), t(0.1, 0.2), torch.tensor([1, 0]), beta=1.0)
    with pytest.raises(ValueError, match="weight"):
        diffusion_kto_loss(t(0.1), t(0.3), t(0.2), t(0.2), beta=1.0, weight=t(1.0, 1.0))


# -- MaPO ------------------------------------------------------------------------------------
def test_mapo_known_values():
    """snr 1, f(x) = x / (e^x - 1): f(ln 2) = ln 2 / 1 = 0.693147, f(ln 3) = ln 3 / 2 = 0.549306;
    log-odds ln 2 - ln 3 / 2 = ln(2 / sqrt 3) = 0.143841. T = 2: logit ln(4/3), so
    -logsigmoid = ln(1 + 3/4) = ln(7/4) = 0.559616. beta 0.5:
    loss = e_w + 0.5 * 0.559616 = 0.693147 + 0.279808 = 0.972955."""
    out = mapo_loss(t(math.log(2)), t(math.log(3)), beta=0.5, snr=1.0, num_timesteps=2)
    assert out.reward_w.item() == pytest.approx(0.693147, abs=1e-6)
    assert out.reward_l.item() == pytest.approx(0.549306, abs=1e-6)
    assert out.margin.item() == pytest.approx(0.143841, abs=1e-6)
    assert out.logits.item() == pytest.approx(math.log(4 / 3))
    assert out.loss.item() == pytest.approx(0.972955, abs=1e-6)
    assert out.accuracy == 1.0
    # lambda(t) = 2 with T = 1 is T = 2.
    weighted = mapo_loss(t(math.log(2)), t(math.log(3)), beta=0.5, snr=1.0, num_timesteps=1, weight=t(2.0))
    assert weighted.loss.item() == pytest.approx(out.loss.item())


def test_mapo_equal_errors_give_sft_plus_beta_log2_and_f0_is_1():
    """e_w == e_l: log-odds 0, loss = mean(e_w) + beta * ln 2 = 0.4 + 0.1 * 0.693147 = 0.469315.
    f at 0 is its limit 1, and the series used below x = 1e-4 agrees with x / (e^x - 1) there."""
    out = mapo_loss(t(0.3, 0.5), t(0.3, 0.5), beta=0.1, snr=0.5, num_timesteps=1000)
    assert out.loss.item() == pytest.approx(0.469315, abs=1e-6)
    assert out.margin.tolist() == [0.0, 0.0] and out.accuracy == 0.0
    assert mapo_odds(t(0.0), 0.5).item() == 1.0
    x = 0.99e-4  # err 1.98e-4 at snr 0.5, just inside the series
    assert mapo_odds(t(2 * x), 0.5).item() == pytest.approx(x / math.expm1(x), abs=1e-14)


def test_mapo_gradients_by_hand():
    """Known-values case: d/de_w = 1 - beta * sigmoid(-L) * T * snr * f'(ln 2), with
    f'(x) = (e^x - 1 - x e^x) / (e^x - 1)^2: f'(ln 2) = 1 - 2 ln 2 = -0.386294,
    f'(ln 3) = (2 - 3 ln 3) / 4 = -0.323959; sigmoid(-ln(4/3)) = 3/7.
    d/de_w = 1 + 0.5 * 3/7 * 2 * 0.386294 = 1.165555; d/de_l = -0.5 * 3/7 * 2 * 0.323959 = -0.138840."""
    e_w, e_l = t(math.log(2)).requires_grad_(), t(math.log(3)).requires_grad_()
    mapo_loss(e_w, e_l, beta=0.5, snr=1.0, num_timesteps=2).loss.backward()
    assert e_w.grad.item() == pytest.approx(1.165555, abs=1e-6)
    assert e_l.grad.item() == pytest.approx(-0.138840, abs=1e-6)


def test_mapo_rejects_bad_values():
    for bad in (dict(beta=0.0), dict(snr=0.0), dict(num_timesteps=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            mapo_loss(t(0.1), t(0.2), **{"beta": 0.1, "snr": 0.5, "num_timesteps": 1000, **bad})


# -- config ----------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["toy", "sd15", "sdxl"])
def test_presets_carry_the_published_numbers(preset):
    dspo, kto, mapo = (load_config(method=m, preset=preset).method for m in ("dspo", "diff-kto", "mapo"))
    assert (dspo.objective, dspo.reference, dspo.beta, dspo.timestep_sampler, dspo.reward_scale) == (
        "dspo",
        "fixed",
        0.001,
        "uniform",
        "constant",
    )
    assert (kto.objective, kto.reference, kto.beta, kto.desirable_weight, kto.undesirable_weight) == (
        "kto",
        "fixed",
        1000.0,
        1.6,
        0.4,
    )
    assert (mapo.objective, mapo.reference, mapo.beta, mapo.mapo_snr) == ("mapo", "none", 0.1, 0.5)
    # Same budget as Diffusion-DPO on the same preset.
    assert load_config(method="mapo", preset=preset).training == load_config(method="diff-dpo", preset=preset).training


@pytest.mark.parametrize("method", ["mapo", "sft"])
@pytest.mark.parametrize(
    "field, value",
    [
        ("reference", "sync"),
        ("reference", "fixed"),
        ("tau", 16),
        ("delta", 0.01),
        ("on_exceed", "reinit"),
        ("mixup_alpha", 0.5),
    ],
)
def test_reference_free_methods_refuse_reference_settings(method, field, value):
    with pytest.raises(ConfigError) as error:
        load_config(method=method, overrides={"method": {field: value}})
    message = str(error.value)
    assert message.startswith(f"method.{field}:") and "\n" not in message and method in message


def test_reference_free_refusal_reaches_config_files(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[method]\nname = "mapo"\ntau = 8\n')
    with pytest.raises(ConfigError, match=r"^method\.tau: the mapo objective has no reference model"):
        load_config(config_file=path)


def test_dspo_and_kto_compose_with_reference_updates():
    for method in ("dspo", "diff-kto"):
        config = load_config(method=method, overrides={"method": {"reference": "sync", "tau": 4, "delta": 0.01}})
        rule = config.method.reference_rule()
        assert (rule.mode, rule.tau, rule.delta) == ("sync", 4, 0.01)
        with pytest.raises(ConfigError, match=r"^method\.reference: the (dspo|kto) objective needs"):
            load_config(method=method, overrides={"method": {"reference": "none"}})


@pytest.mark.parametrize("field", ["desirable_weight", "undesirable_weight", "mapo_snr"])
def test_baseline_hyperparameters_are_validated(field):
    with pytest.raises(ConfigError, match=rf"^method\.{field}: must be > 0"):
        load_config(method="diff-kto", overrides={"method": {field: 0.0}})


# -- model set: a reference-free method has no reference ------------------------------------------
def test_reference_free_model_set_builds_and_runs_no_reference():
    from refbench.training.modelset import REFERENCE, FullModelSet

    models = FullModelSet(torch.nn.Linear(2, 2), reference_mode="none")
    assert models.reference_module is models.initial_module  # no copy beyond the initial model
    with pytest.raises(RuntimeError, match="reference-free"):
        with models.use(REFERENCE):
            pass


# -- training in the one trainer ----------------------------------------------------------------
@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """A random-weight toy model, a tiny SD1.5-style pipeline, and 16 toy pairs."""
    from refbench.tiny import build_tiny_pipeline
    from refbench.toy.model import build_components, save_components
    from refbench.toy.pairs import build_pairs, write_pairs

    root = tmp_path_factory.mktemp("baselines")
    save_components(build_components(seed=0), root / "toy")
    build_tiny_pipeline(root / "sd15")
    write_pairs(build_pairs(16, "train", seed=0), root / "pairs.parquet")
    return root


def train_short(worlds, tmp_path, method, preset="toy", method_overrides=None, **model_overrides):
    from refbench.store import Store
    from refbench.training.run import run_training

    config = load_config(
        method=method,
        preset=preset,
        overrides={
            "model": {"pretrained": str(worlds / preset), "resolution": 16, **model_overrides},
            "data": {"source": str(worlds / "pairs.parquet")},
            "method": method_overrides or {},
            "training": {
                "max_steps": 2,
                "batch_size": 2,
                "gradient_accumulation_steps": 1,
                "lr_warmup_steps": 0,
                "learning_rate": 1e-4,
                "monitor_size": 2,
                "monitor_every": 1,
                "checkpoint_every": 100,
            },
        },
    )
    run_training(config, db=tmp_path / "db.duckdb", out_root=tmp_path / "runs", progress=False)
    store = Store(tmp_path / "db.duckdb")
    return (
        store.query(f"select * from train_metrics where run = '{method}' order by step"),
        store.query("select step, kind from ref_events order by step"),
    )


@pytest.mark.parametrize("method", ["dspo", "diff-kto", "mapo"])
def test_each_baseline_trains_on_the_toy_world(worlds, tmp_path, method):
    """Two steps each. Step 1, policy == reference (up to float32 rounding between the passes
    with and without autograd): DSPO's loss is the winners' error, KTO's is mean(w) / 2 = 0.5.
    MaPO logs no reference errors (it never runs one) and its loss exceeds the winners' error
    by beta * mean(-logsigmoid(.)) > 0."""
    metrics, events = train_short(worlds, tmp_path, method)
    assert metrics["step"].tolist() == [1, 2] and events.empty
    assert metrics[["loss", "accuracy", "margin", "model_err_w", "model_err_l", "div_policy"]].notna().all().all()
    first = metrics.iloc[0]
    if method == "dspo":
        assert first["loss"] == pytest.approx(first["model_err_w"], abs=1e-6)
        assert first["ref_err_w"] == pytest.approx(first["model_err_w"], abs=1e-5)
    elif method == "diff-kto":
        assert first["loss"] == pytest.approx(0.5, abs=1e-3)
    else:
        assert metrics["ref_err_w"].isna().all() and metrics["ref_err_l"].isna().all()
        assert first["loss"] > first["model_err_w"]


def test_dspo_with_reference_sync_on_the_toy_world(worlds, tmp_path):
    """DSPO with the paper's reference updates: tau 1, delta far away -> a sync after each step."""
    _, events = train_short(worlds, tmp_path, "dspo", method_overrides={"reference": "sync", "tau": 1, "delta": 1.0})
    assert events.values.tolist() == [[1, "sync"], [2, "sync"]]


def test_lora_model_set_builds_a_reference_adapter_only_to_sync_it(worlds):
    """LoRA: a fixed reference is the base with adapters off and a reference-free method has
    none, so neither builds a reference adapter; only a syncing reference does."""
    from diffusers import UNet2DConditionModel

    from refbench.training.modelset import REFERENCE, LoraModelSet

    def adapters(mode):
        unet = UNet2DConditionModel.from_pretrained(str(worlds / "sd15" / "unet"))
        models = LoraModelSet(unet, reference_mode=mode, rank=2)
        return models, {n.split(".lora_")[1].split(".")[1] for n, _ in unet.named_parameters() if ".lora_" in n}

    assert adapters("sync")[1] == {"policy", "reference"}
    assert adapters("fixed")[1] == {"policy"}
    models, names = adapters("none")
    assert names == {"policy"} and models.reference_state() == {}
    with pytest.raises(RuntimeError, match="reference-free"):
        with models.use(REFERENCE):
            pass


def test_baselines_train_on_the_tiny_sd_model(worlds, tmp_path):
    """The real-model path (VAE latents, CLIP text encoder, SD1.5 UNet classes): DSPO with LoRA
    (a fixed reference = adapters off, so no reference adapter is built) and MaPO full fine-tuning."""
    metrics, _ = train_short(worlds, tmp_path / "dspo", "dspo", preset="sd15", lora_rank=4)
    assert metrics["step"].tolist() == [1, 2] and metrics["ref_err_w"].notna().all()
    assert (tmp_path / "dspo" / "runs" / "dspo" / "final" / "pytorch_lora_weights.safetensors").is_file()
    metrics, _ = train_short(worlds, tmp_path / "mapo", "mapo", preset="sd15")
    assert metrics["step"].tolist() == [1, 2] and metrics["ref_err_w"].isna().all()
