"""Configuration: presets, layering, and one-line errors naming the bad field."""

import pytest

from refbench.config import load_config, method_names, preset_names
from refbench.errors import ConfigError

# The table of named methods in docs/methods.md, written out.
METHOD_TABLE = {
    "sft": ("sft", "none", None, "uniform", "constant"),
    "diff-dpo": ("dpo", "fixed", None, "uniform", "constant"),
    "timestep-only": ("dpo", "fixed", None, "gamma", "inv-sqrt-snr"),
    "ref-noreg": ("dpo", "sync", "none", "uniform", "constant"),
    "ref-reinit": ("dpo", "sync", "reinit", "uniform", "constant"),
    "ref-explore": ("dpo", "sync", "freeze", "uniform", "constant"),
    "refdpo": ("dpo", "sync", "freeze", "gamma", "inv-sqrt-snr"),
    # The baselines the paper compares against (a loss swap in the same loop).
    "dspo": ("dspo", "fixed", None, "uniform", "constant"),
    "diff-kto": ("kto", "fixed", None, "uniform", "constant"),
    "mapo": ("mapo", "none", None, "uniform", "constant"),
}


def test_every_named_method_matches_the_design_table():
    assert method_names() == sorted(METHOD_TABLE)
    assert preset_names() == ["sd15", "sd3", "sd35", "sdxl", "toy", "toy-flow"]
    for name, (objective, reference, on_exceed, sampler, scale) in METHOD_TABLE.items():
        method = load_config(method=name).method
        assert (method.objective, method.reference, method.timestep_sampler, method.reward_scale) == (
            objective,
            reference,
            sampler,
            scale,
        )
        if on_exceed is not None:
            assert method.on_exceed == on_exceed
        assert method.name == name


def test_default_is_refdpo_on_toy_named_after_the_method():
    config = load_config()
    assert (config.name, config.preset, config.method.name, config.model.kind) == ("refdpo", "toy", "refdpo", "toy")
    assert load_config(method="diff-dpo").name == "diff-dpo"


def test_paper_presets():
    """SD1.5: beta 5000, delta 0.005, gamma 0.9, 2000 steps; lr 1e-8 scaled by the effective batch
    2048: on 16 processes of batch 1 that is accumulation 2048 / 16 = 128, on 8 it is 256, and
    lr 1e-8 x 2048 = 2.048e-5 either way. SDXL: delta 0.002."""
    sd15 = load_config(method="refdpo", preset="sd15")
    assert (sd15.method.beta, sd15.method.delta, sd15.method.gamma, sd15.training.max_steps) == (
        5000.0,
        0.005,
        0.9,
        2000,
    )
    assert (sd15.training.accumulation(16), sd15.training.accumulation(8)) == (128, 256)
    assert sd15.training.effective_batch_size(16) == sd15.training.effective_batch_size(8) == 2048
    assert sd15.training.effective_learning_rate(16) == pytest.approx(2.048e-5)
    assert load_config(preset="sdxl").method.delta == 0.002
    assert sd15.method.tau in (16, 32, 64)


def test_the_official_recipe_in_the_presets():
    """What the official launchers set (launchers/sd15.sh, launchers/sdxl.sh and train.py's
    defaults): 20% empty prompts and random flips for both; SDXL trains with Adafactor, warms up
    for 200 steps, loads the fp16-fix VAE; the effective batch is 2048."""
    for preset in ("sd15", "sdxl"):
        config = load_config(method="diff-dpo", preset=preset)
        assert (config.data.caption_dropout, config.data.random_flip, config.training.effective_batch) == (
            0.2,
            True,
            2048,
        )
        assert config.model.vae_fp32
    sdxl = load_config(method="diff-dpo", preset="sdxl")
    assert (sdxl.training.optimizer, sdxl.training.lr_warmup_steps, sdxl.model.vae) == (
        "adafactor",
        200,
        "madebyollin/sdxl-vae-fp16-fix",
    )
    assert load_config(method="diff-dpo", preset="sd15").training.optimizer == "adamw"
    toy = load_config(method="diff-dpo")
    assert (toy.data.caption_dropout, toy.data.random_flip, toy.training.effective_batch) == (0.0, False, 0)


def test_effective_batch_sets_the_accumulation_or_is_refused_in_one_line():
    """2048 pairs on 3 processes of batch 1 do not divide (2048 = 2^11): one line naming both.
    An accumulation asked for above the preset replaces the preset's effective batch; both in one
    place are refused. --effective-batch 64 with batch 4 on 2 processes: accumulation 8."""
    sd15 = load_config(preset="sd15")
    with pytest.raises(ConfigError, match=r"training.effective_batch: 2048 is not divisible by 3 processes x batch 1"):
        sd15.training.accumulation(3)
    asked = load_config(preset="sd15", overrides={"training": {"gradient_accumulation_steps": 2}})
    assert (asked.training.effective_batch, asked.training.accumulation(4)) == (0, 2)
    with pytest.raises(ConfigError, match="not both"):
        load_config(preset="sd15", overrides={"training": {"gradient_accumulation_steps": 2, "effective_batch": 64}})
    assert load_config(overrides={"training": {"effective_batch": 64, "batch_size": 4}}).training.accumulation(2) == 8


def test_lora_refuses_a_soft_sync_in_one_line():
    """mixup_alpha 0.5 mixes the adapters' factors A and B separately: (1-a) B_r A_r + ... is not
    (1-a) dW_ref + a dW_policy, so LoRA refuses it; full fine-tuning accepts it."""
    with pytest.raises(ConfigError, match=r"method.mixup_alpha: must be 1 \(a hard copy\) with LoRA"):
        load_config(overrides={"model": {"lora_rank": 4}, "method": {"mixup_alpha": 0.5}})
    assert load_config(overrides={"method": {"mixup_alpha": 0.5}}).method.mixup_alpha == 0.5


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(
        ConfigError,
        match=r"unknown method 'dpo'; valid: diff-dpo, diff-kto, dspo, mapo, ref-explore, ref-noreg, ref-reinit, refdpo, sft, timestep-only",
    ):
        load_config(method="dpo")
    with pytest.raises(ConfigError, match=r"unknown preset 'sd2'; valid: sd15, sd3, sd35, sdxl, toy, toy-flow"):
        load_config(preset="sd2")


@pytest.mark.parametrize(
    "section, field, value",
    [
        ("method", "gamma", 0.0),
        ("method", "gamma", 1.5),
        ("method", "tau", 0),
        ("method", "delta", 0.0),
        ("method", "delta", -1.0),
        ("method", "beta", 0.0),
        ("method", "beta", -5.0),
        ("method", "bins", 0),
        ("method", "mixup_alpha", 1.5),
        ("method", "reward_scale", "cosine"),
        ("method", "timestep_sampler", "lognormal"),
        ("training", "max_steps", 0),
        ("training", "learning_rate", 0.0),
        ("training", "batch_size", 0),
        ("training", "lr_scheduler", "linear"),
        ("model", "resolution", 20),
        ("model", "lora_rank", -1),
        ("model", "mixed_precision", "fp8"),
        ("data", "max_pairs", 0),
    ],
)
def test_out_of_range_values_name_the_field(section, field, value):
    with pytest.raises(ConfigError) as error:
        load_config(overrides={section: {field: value}})
    message = str(error.value)
    assert message.startswith(f"{section}.{field}:") and "\n" not in message


def test_wrong_types_name_the_field():
    with pytest.raises(ConfigError, match=r"^method\.tau: must be int; got 'abc'"):
        load_config(overrides={"method": {"tau": "abc"}})
    with pytest.raises(ConfigError, match=r"^model\.gradient_checkpointing: must be true or false"):
        load_config(overrides={"model": {"gradient_checkpointing": "yes"}})


def test_sft_refuses_a_reference():
    with pytest.raises(ConfigError, match="method.reference"):
        load_config(method="sft", overrides={"method": {"reference": "sync"}})


def test_config_file_layers_under_cli_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('name = "mine"\npreset = "toy"\n[method]\nname = "ref-noreg"\ntau = 8\nbeta = 250\n')
    config = load_config(config_file=path)
    assert (config.name, config.method.name, config.method.tau, config.method.beta) == ("mine", "ref-noreg", 8, 250.0)
    config = load_config(config_file=path, overrides={"method": {"tau": 4}})
    assert config.method.tau == 4 and config.method.beta == 250.0


def test_bad_config_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(config_file=tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[method\ntau = 3\n")
    with pytest.raises(ConfigError, match="is malformed"):
        load_config(config_file=broken)
    typo = tmp_path / "typo.toml"
    typo.write_text("[method]\ntua = 3\n")
    with pytest.raises(ConfigError, match=r"unknown field method\.tua; valid: .*tau"):
        load_config(config_file=typo)
    section = tmp_path / "section.json"
    section.write_text('{"optimizer": {"lr": 1}}')
    with pytest.raises(ConfigError, match="unknown config section or field 'optimizer'"):
        load_config(config_file=section)


def test_none_overrides_mean_not_given():
    """The CLI passes every flag; the ones not given are None and must not replace preset values."""
    config = load_config(
        preset="sd15", overrides={"method": {"beta": None, "tau": 16}, "training": {"max_steps": None}}
    )
    assert (config.method.beta, config.method.tau, config.training.max_steps) == (5000.0, 16, 2000)
