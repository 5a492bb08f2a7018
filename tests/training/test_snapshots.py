"""Snapshots (issue 25): the weights a run saves after step s are those of a run of s steps, and the
store knows them as a finished run ``NAME.stepS`` that generate takes like any other."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from toy_helpers import config_for

from refbench.errors import ConfigError
from refbench.store import Store
from refbench.training.run import run_training, snapshot_name


def _weights(folder):
    return load_file(str(next(folder.glob("unet/*.safetensors"))))


def test_a_snapshot_equals_the_shorter_run(toy_world, tmp_path):
    """refdpo (tau 2, so the reference syncs too): a 4-step run with a snapshot at step 2, and a run
    of 2 steps with the same seed. The snapshot's weights equal the short run's final weights
    exactly, and differ from the 4-step run's (two more updates at lr 1e-4)."""
    db, out = tmp_path / "db.duckdb", tmp_path / "runs"
    torch.set_num_threads(1)
    long = run_training(
        config_for(toy_world, name="long", max_steps=4, snapshot_steps=[2]), db=db, out_root=out, progress=False
    )
    short = run_training(config_for(toy_world, name="short", max_steps=2), db=db, out_root=out, progress=False)
    snapshot = long / "snapshots" / "step-2" / "final"
    at_two, short_final, long_final = _weights(snapshot), _weights(short / "final"), _weights(long / "final")
    assert at_two.keys() == short_final.keys()
    assert all(torch.equal(at_two[k], short_final[k]) for k in at_two)
    assert any(not torch.equal(at_two[k], long_final[k]) for k in at_two)

    record = Store(db).get_run(snapshot_name("long", 2))
    assert record["status"] == "finished" and record["message"] == "the first 2 steps of long"
    assert record["config"]["training"]["max_steps"] == 2 and record["config"]["training"]["snapshot_steps"] == []
    assert record["run_dir"] == str((long / "snapshots" / "step-2").resolve())


@pytest.mark.parametrize(
    "training, message",
    [
        ({"snapshot_steps": [6]}, "training.snapshot_steps: must lie in [1, max_steps = 6)"),
        ({"snapshot_steps": [2], "lr_scheduler": "cosine"}, "training.snapshot_steps: a cosine schedule"),
        ({"snapshot_steps": [2.5]}, "training.snapshot_steps: must be a list of integers"),
    ],
)
def test_bad_snapshot_steps_are_one_line(toy_world, training, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        config_for(toy_world, **training)
