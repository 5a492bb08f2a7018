"""`refbench sweep` and `refbench reproduce`: naming, skipping, resuming after a kill, the results folder."""

import os
import signal
import subprocess
import sys

import pytest
from store_polling import wait_for_checkpoint

from refbench.errors import RefbenchError
from refbench.experiments.sweep import grid_specs, run_specs
from refbench.store import Store


def test_grid_names_runs_after_their_settings():
    """2 methods x tau {4, 16} x seed {1} = 4 runs, named method-tau-seed in that order."""
    specs = grid_specs(["refdpo", "ref-noreg"], tau=[4, 16], seed=[1], max_steps=50)
    assert [s.name for s in specs] == [
        "refdpo-tau4-seed1",
        "refdpo-tau16-seed1",
        "ref-noreg-tau4-seed1",
        "ref-noreg-tau16-seed1",
    ]
    assert specs[1].overrides == {"method": {"tau": 16}, "training": {"seed": 1, "max_steps": 50}}
    assert [s.name for s in grid_specs(["diff-dpo"], lr=[5e-05], beta=[1000.0])] == ["diff-dpo-beta1000-lr5e-05"]
    assert [s.name for s in grid_specs(["sft", "mapo"])] == ["sft", "mapo"]


def test_grid_refuses_unknown_axes_and_clashing_names():
    with pytest.raises(RefbenchError, match="unknown sweep axis 'eta'"):
        grid_specs(["refdpo"], eta=[1])
    with pytest.raises(RefbenchError, match="unknown method 'nope'; valid: "):
        grid_specs(["nope"])
    with pytest.raises(RefbenchError, match="names two runs alike"):
        grid_specs(["refdpo", "refdpo"])


TINY_TRAINING = {"batch_size": 2, "monitor_size": 2, "lr_warmup_steps": 0, "checkpoint_every": 2}


def _tiny_specs(toy_world, max_steps):  # noqa: F811
    extra = {
        "model": {"pretrained": str(toy_world / "base")},
        "data": {"source": str(toy_world / "pairs.parquet")},
        "training": TINY_TRAINING,
    }
    return grid_specs(["diff-dpo", "refdpo"], max_steps=max_steps, extra=extra)


def test_sweep_trains_then_skips(two_runs_at_jobs_2):
    """Two 4-step runs at once (jobs 2); run again, both are skipped and no metric row is duplicated.
    The first sweep is the session's (conftest.py), which test_plan_workers compares with jobs 1;
    the rerun finds both finished and starts no worker."""
    shared = two_runs_at_jobs_2
    specs, db, out = shared["specs"], shared["db"], shared["out"]
    assert shared["outcomes"] == {"diff-dpo": "trained", "refdpo": "trained"}
    assert run_specs(specs, db=db, out_root=out, jobs=2, progress=False) == {"diff-dpo": "skipped", "refdpo": "skipped"}
    counts = Store(db).query(
        "select run, count(*) as n, count(distinct step) as steps from train_metrics group by run order by run"
    )
    assert counts.values.tolist() == [["diff-dpo", 4, 4], ["refdpo", 4, 4]]


@pytest.mark.slow
def test_sweep_killed_then_rerun_finishes_the_work(toy_world, tmp_path):  # noqa: F811
    """SIGKILL the whole sweep (it and its trainer) while the second run trains; the rerun skips the
    finished run, resumes the other, and the store ends with each step exactly once."""
    db, out = tmp_path / "db.duckdb", tmp_path / "runs"
    specs = _tiny_specs(toy_world, 8)
    script = (
        "from pathlib import Path; from refbench.experiments.sweep import grid_specs, run_specs; "
        f"specs = grid_specs(['diff-dpo', 'refdpo'], max_steps=8, extra={specs[0].overrides!r}); "
        f"run_specs(specs, db=Path({str(db)!r}), out_root=Path({str(out)!r}), jobs=1, progress=False)"
    )
    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)  # its own process group
    wait_for_checkpoint(out / "refdpo", 2, still_going=lambda: process.poll() is None)  # 6 of 8 steps to go
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    store = Store(db)
    assert store.get_run("diff-dpo")["status"] == "finished" and store.get_run("refdpo")["status"] != "finished"
    assert run_specs(specs, db=db, out_root=out, jobs=1, progress=False) == {"diff-dpo": "skipped", "refdpo": "trained"}
    counts = store.query(
        "select run, count(*) as n, count(distinct step) as steps from train_metrics group by run order by run"
    )
    assert counts.values.tolist() == [["diff-dpo", 8, 8], ["refdpo", 8, 8]]
    assert store.get_run("refdpo")["status"] == "finished"


def test_plan_specs_cross_every_run_with_the_training_seeds_seed_major():
    """3 seeds x the plan's 20 runs = 60 specs, seed 0's whole plan first (a partial reproduction has whole
    seeds); each spec keeps its overrides and sets training.seed; names are NAME-seedK."""
    from refbench.experiments import reproduce_plan as plan

    specs = plan.plan_specs(seeds=3, max_steps=7)
    assert len(specs) == 3 * len(plan.PLAN) == 60
    assert [s.name for s in specs[:2]] == ["refdpo-seed0", "diff-dpo-seed0"]
    assert specs[len(plan.PLAN)].name == "refdpo-seed1"
    lr5x = next(s for s in specs if s.name == "diff-dpo-lr5x-seed2")
    assert lr5x.overrides["training"] == {"learning_rate": 5e-5, "seed": 2, "max_steps": 7}
    assert plan.seeded_name("refdpo-noreg-tau4", 1) == "refdpo-noreg-tau4-seed1"
    assert [s.name for s in plan.plan_specs(seeds=1, only=["sft"])] == ["sft-seed0"]
