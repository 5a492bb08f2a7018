"""`refbench sweep` and `refbench reproduce`: naming, skipping, resuming after a kill, the results folder."""

import os
import signal
import subprocess
import sys

import pytest
from store_polling import wait_for_steps

from refbench.errors import RefbenchError
from refbench.store import Store
from refbench.experiments.sweep import grid_specs, run_specs



def test_grid_names_runs_after_their_settings():
    """2 methods x tau {4, 16} x seed {1} = 4 runs, named method-tau-seed in that order."""
    specs = grid_specs(["refdpo", "ref-noreg"], tau=[4, 16], seed=[1], max_steps=50)
    assert [s.name for s in specs] == ["refdpo-tau4-seed1", "refdpo-tau16-seed1", "ref-noreg-tau4-seed1", "ref-noreg-tau16-seed1"]
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
    extra = {"model": {"pretrained": str(toy_world / "base")}, "data": {"source": str(toy_world / "pairs.parquet")},
             "training": TINY_TRAINING}
    return grid_specs(["diff-dpo", "refdpo"], max_steps=max_steps, extra=extra)


def test_sweep_trains_then_skips(toy_world, tmp_path):  # noqa: F811
    """Two 3-step runs at once (jobs 2); run again, both are skipped and no metric row is duplicated."""
    specs = _tiny_specs(toy_world, 3)
    db, out = tmp_path / "db.duckdb", tmp_path / "runs"
    assert run_specs(specs, db=db, out_root=out, jobs=2, progress=False) == {"diff-dpo": "trained", "refdpo": "trained"}
    assert run_specs(specs, db=db, out_root=out, jobs=2, progress=False) == {"diff-dpo": "skipped", "refdpo": "skipped"}
    counts = Store(db).query("select run, count(*) as n, count(distinct step) as steps from train_metrics group by run order by run")
    assert counts.values.tolist() == [["diff-dpo", 3, 3], ["refdpo", 3, 3]]


@pytest.mark.slow
def test_sweep_killed_then_rerun_finishes_the_work(toy_world, tmp_path):  # noqa: F811
    """SIGKILL the whole sweep (it and its trainer) while the second run trains; the rerun skips the
    finished run, resumes the other, and the store ends with each step exactly once."""
    db, out = tmp_path / "db.duckdb", tmp_path / "runs"
    specs = _tiny_specs(toy_world, 8)
    script = ("from pathlib import Path; from refbench.experiments.sweep import grid_specs, run_specs; "
              f"specs = grid_specs(['diff-dpo', 'refdpo'], max_steps=8, extra={specs[0].overrides!r}); "
              f"run_specs(specs, db=Path({str(db)!r}), out_root=Path({str(out)!r}), jobs=1, progress=False)")
    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)  # its own process group
    wait_for_steps(db, "refdpo", 3, still_going=lambda: process.poll() is None, every=0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    store = Store(db)
    assert store.get_run("diff-dpo")["status"] == "finished" and store.get_run("refdpo")["status"] != "finished"
    assert run_specs(specs, db=db, out_root=out, jobs=1, progress=False) == {"diff-dpo": "skipped", "refdpo": "trained"}
    counts = store.query("select run, count(*) as n, count(distinct step) as steps from train_metrics group by run order by run")
    assert counts.values.tolist() == [["diff-dpo", 8, 8], ["refdpo", 8, 8]]
    assert store.get_run("refdpo")["status"] == "finished"


@pytest.mark.slow
def test_reproduce_end_to_end_and_rerun(tmp_path):
    """One run of the plan under 2 training seeds with a 3-step budget on 2 prompts: runs refdpo-seedK
    trained with training.seed K, every run sampled on the same prompts and evaluation seed; results/ gets
    tables, figures, the parquet export and the README; a rerun trains nothing and adds no rows."""
    results, db, out = tmp_path / "results", tmp_path / "r.duckdb", tmp_path / "runs"
    command = [sys.executable, "-m", "refbench", "reproduce", "--regime", "early", "--results", str(results), "--db", str(db), "--out", str(out),
               "--only", "refdpo", "--max-steps", "3", "--seeds", "2", "--eval-seeds", "1", "--num-prompts", "2",
               "--timestep-pairs", "4", "--no-progress"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    for name in ("README.md", "table1.md", "table3.md", "table4.md", "costs.md", "fig1b_kl.png", "fig2_timestep.png",
                 "data/train_metrics.parquet", "data/scores.parquet"):
        assert (results / name).is_file(), name
    store = Store(db)
    before = {t: store.query(f"select count(*) as n from {t}")["n"][0] for t in ("train_metrics", "samples", "scores", "timestep_stats")}
    assert before["samples"] == 3 * 2  # refdpo x 2 training seeds, and base, on 2 prompts x 1 evaluation seed
    assert before["timestep_stats"] == 2 * 10
    assert {run: store.get_run(run)["seed"] for run in ("refdpo-seed0", "refdpo-seed1")} == {"refdpo-seed0": 0, "refdpo-seed1": 1}
    keys = store.query("select run, list(prompt || seed order by prompt) as keys from samples group by run")
    assert len(set(map(tuple, keys["keys"]))) == 1  # every run on the same (prompt, evaluation seed)
    assert store.query("select count(distinct run) as n from run_costs")["n"][0] == 2
    readme = (results / "README.md").read_text()
    assert "| Table 1 | Ours beats Diffusion-DPO" in readme and "(of 18 claims, after Holm's adjustment)" in readme
    # Table 1 against the base model: both training seeds, each paired on 2 samples with base's
    assert "| refdpo vs. base model |" in readme and "| 2 x 2 |" in (results / "table1.md").read_text()
    second = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-2000:]
    after = {t: store.query(f"select count(*) as n from {t}")["n"][0] for t in before}
    assert after == before
    log = (out / "_sweep" / "refdpo-seed1.log").read_text()
    assert log.count("$ refbench train") == 1  # trained once, then only the evaluation steps re-checked


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
