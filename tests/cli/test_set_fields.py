"""`--set SECTION.FIELD=VALUE` (issue 26): any config field on the command line, typed from the
dataclass, with the same one-line errors as a config file."""

from __future__ import annotations

import pytest
from cli_helpers import run_refbench as refbench

from refbench.config_layers import assignments
from refbench.errors import ConfigError
from refbench.store import Store


def test_values_are_read_as_toml_else_as_text():
    parsed = assignments(
        [
            "method.tau=4",
            "training.learning_rate=1e-5",
            "model.t5=false",
            "data.exclude_prompts=toy-val",
            "training.snapshot_steps=[64, 128]",
            'method.objective="dpo"',
        ]
    )
    assert parsed == {
        "method": {"tau": 4, "objective": "dpo"},
        "training": {"learning_rate": 1e-5, "snapshot_steps": [64, 128]},
        "model": {"t5": False},
        "data": {"exclude_prompts": "toy-val"},
    }
    for bad in ("tau=4", "method.tau", "optimizer.lr=1", "method.=3"):
        with pytest.raises(ConfigError, match="expected SECTION.FIELD=VALUE"):
            assignments([bad])


def test_train_takes_set_fields(toy_world, tmp_path, monkeypatch, capsys):
    """A 3-step refdpo run with tau 4 from --set: the stored config has both; a mistyped field and a
    bad value are one line each, exit code 2."""
    db = tmp_path / "db.duckdb"
    common = [
        "--model",
        toy_world / "base",
        "--data",
        toy_world / "pairs.parquet",
        "--db",
        db,
        "--out",
        tmp_path / "runs",
        "--no-progress",
    ]
    code, _, err = refbench(
        monkeypatch,
        capsys,
        "train",
        *common,
        "--set",
        "method.tau=4",
        "--set",
        "training.max_steps=3",
        "--set",
        "training.batch_size=2",
        "--set",
        "training.monitor_size=2",
    )
    assert code == 0, err
    config = Store(db).get_run("refdpo")["config"]
    assert config["method"]["tau"] == 4 and config["training"]["max_steps"] == 3
    code, _, err = refbench(monkeypatch, capsys, "train", *common, "--set", "training.max_step=3")
    assert code == 2 and err.startswith("error: unknown field training.max_step; valid: ") and "\n" not in err
    code, _, err = refbench(monkeypatch, capsys, "train", *common, "--set", "training.max_steps=abc")
    assert code == 2 and err == "error: training.max_steps: must be int; got 'abc'"
