"""Configuration: presets, layering, and one-line errors naming the bad field."""

import pytest

from refbench.config import load_config, method_names, preset_names
from refbench.errors import ConfigError

# DESIGN.md section 1, the table of named methods, written out.
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
    assert preset_names() == ["sd15", "sdxl", "toy"]
    for name, (objective, reference, on_exceed, sampler, scale) in METHOD_TABLE.items():
        method = load_config(method=name).method
        assert (method.objective, method.reference, method.timestep_sampler, method.reward_scale) == (
            objective, reference, sampler, scale)
        if on_exceed is not None:
            assert method.on_exceed == on_exceed
        assert method.name == name


def test_default_is_refdpo_on_toy_named_after_the_method():
    config = load_config()
    assert (config.name, config.preset, config.method.name, config.model.kind) == ("refdpo", "toy", "refdpo", "toy")
    assert load_config(method="diff-dpo").name == "diff-dpo"


def test_paper_presets():
    """SD1.5: beta 5000, delta 0.005, gamma 0.9, 2000 steps; lr 1e-8 scaled by the effective batch:
    1 x 128 accumulation x 16 processes = 2048 pairs, lr 1e-8 x 2048 = 2.048e-5. SDXL: delta 0.002."""
    sd15 = load_config(method="refdpo", preset="sd15")
    assert (sd15.method.beta, sd15.method.delta, sd15.method.gamma, sd15.training.max_steps) == (5000.0, 0.005, 0.9, 2000)
    assert sd15.training.effective_batch_size(16) == 2048
    assert sd15.training.effective_learning_rate(16) == pytest.approx(2.048e-5)
    assert load_config(preset="sdxl").method.delta == 0.002
    assert sd15.method.tau in (16, 32, 64)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown method 'dpo'; valid: diff-dpo, diff-kto, dspo, mapo, ref-explore, ref-noreg, ref-reinit, refdpo, sft, timestep-only"):
        load_config(method="dpo")
    with pytest.raises(ConfigError, match=r"unknown preset 'sd2'; valid: sd15, sdxl, toy"):
        load_config(preset="sd2")


@pytest.mark.parametrize(
    "section, field, value",
    [("method", "gamma", 0.0), ("method", "gamma", 1.5), ("method", "tau", 0), ("method", "delta", 0.0),
     ("method", "delta", -1.0), ("method", "beta", 0.0), ("method", "beta", -5.0), ("method", "bins", 0),
     ("method", "mixup_alpha", 1.5), ("method", "reward_scale", "cosine"), ("method", "timestep_sampler", "lognormal"),
     ("training", "max_steps", 0), ("training", "learning_rate", 0.0), ("training", "batch_size", 0),
     ("training", "lr_scheduler", "linear"), ("model", "resolution", 20), ("model", "lora_rank", -1),
     ("model", "mixed_precision", "fp8"), ("data", "max_pairs", 0)],
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
    config = load_config(preset="sd15", overrides={"method": {"beta": None, "tau": 16}, "training": {"max_steps": None}})
    assert (config.method.beta, config.method.tau, config.training.max_steps) == (5000.0, 16, 2000)
