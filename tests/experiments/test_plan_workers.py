"""The plan's long-lived workers: numbers independent of --jobs, a killed worker loses nothing,
Ctrl-C stops the runs with a checkpoint, and a step's command line is the command it stands for."""

import multiprocessing
import os
import signal
import subprocess
import sys
import threading

import pytest
import torch
from safetensors.torch import load_file
from store_polling import wait_for_checkpoint
from sweep_helpers import evaluation_steps, tiny_specs

from refbench.experiments.steps import Step
from refbench.experiments.sweep import run_specs
from refbench.store import Store


def _specs(toy_world, methods, max_steps):
    return tiny_specs(toy_world, methods, max_steps)


def test_step_command_line_is_the_refbench_command():
    """Flags in the order given, underscores as dashes, True as a bare flag, None and False left out,
    and the run as --name for train (an argument otherwise)."""
    generate = Step(
        "generate", "refdpo-seed0", {"prompts": "toy-test", "num_prompts": None, "seeds": 2, "no_progress": True}
    )
    assert generate.command_line() == "refbench generate refdpo-seed0 --prompts toy-test --seeds 2 --no-progress"
    train = Step("train", "a b", {"method": "refdpo", "resume": False, "db": "x y.duckdb"})
    assert train.command_line() == "refbench train --name 'a b' --method refdpo --db 'x y.duckdb'"
    with pytest.raises(ValueError, match="unknown step 'plot'"):
        Step("plot", "refdpo")


def _final_weights(run_dir):
    files = sorted((run_dir / "final").rglob("*.safetensors"))
    assert files, run_dir
    return {f"{f.name}:{k}": v for f in files for k, v in load_file(f).items()}


@pytest.mark.slow
def test_jobs_1_and_jobs_2_give_the_same_runs(two_runs_at_jobs_2, tmp_path):
    """Two runs trained, sampled and scored at --jobs 1 (both in one worker, one after the other) and at
    --jobs 2 (one worker each): the same final weights, train_metrics, reference events and scores,
    bit for bit (wall-clock columns aside). The second run in a shared worker inherits nothing.
    The --jobs 2 sweep is the session's (conftest.py), on its toy world, which the --jobs 1 sweep uses too."""
    shared = two_runs_at_jobs_2
    specs = shared["specs"]
    db, out = tmp_path / "j1.duckdb", tmp_path / "runs1"
    timings = {}
    outcomes = {
        1: run_specs(
            specs, db=db, out_root=out, jobs=1, progress=False, then=evaluation_steps(db, out), timings=timings
        ),
        2: shared["outcomes"],
    }
    stores = {1: Store(db), 2: Store(shared["db"])}
    for jobs, timed in ((1, timings), (2, shared["timings"])):
        assert outcomes[jobs] == {"diff-dpo": "trained", "refdpo": "trained"}, jobs
        assert set(timed["refdpo"]) == {"train", "generate", "score", "wall"}
        assert timed["refdpo"]["wall"] >= timed["refdpo"]["train"] > 0
    metrics = "select * exclude (seconds) from train_metrics order by run, step"
    events = "select * from ref_events order by run, step, kind"
    scores = "select run, prompt, seed, metric, value from scores join samples using (sample_id) order by all"
    for sql in (metrics, events, scores):
        one, two = stores[1].query(sql), stores[2].query(sql)
        assert len(one) > 0 or sql == events
        assert one.equals(two), sql
    for run in ("diff-dpo", "refdpo"):
        one, two = _final_weights(out / run), _final_weights(shared["out"] / run)
        assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one), run


@pytest.mark.slow
def test_a_killed_worker_fails_its_run_only_and_the_rerun_resumes_it(toy_world, tmp_path):
    """SIGKILL the worker while it trains the first of three runs: that run fails (the worker's death is
    its message), a fresh worker trains the other two; the rerun resumes the killed run from its
    checkpoint and the store ends with each step of each run exactly once."""
    db, out = tmp_path / "db.duckdb", tmp_path / "runs"
    specs = _specs(toy_world, ["diff-dpo", "refdpo", "sft"], 8)
    killed = []

    def kill_when_training():
        if wait_for_checkpoint(out / "diff-dpo", 2):  # training, with 6 of its 8 steps to go
            for child in multiprocessing.active_children():
                os.kill(child.pid, signal.SIGKILL)
                killed.append(child.pid)

    watcher = threading.Thread(target=kill_when_training)
    watcher.start()
    outcomes = run_specs(specs, db=db, out_root=out, jobs=1, progress=False)
    watcher.join()
    assert len(killed) == 1
    assert outcomes["diff-dpo"].startswith("failed: its worker process died (exit code -9)")
    assert (outcomes["refdpo"], outcomes["sft"]) == ("trained", "trained")
    store = Store(db)
    assert store.get_run("diff-dpo")["status"] == "running"  # as a kill leaves it: resumable
    assert run_specs(specs, db=db, out_root=out, jobs=1, progress=False) == {
        "diff-dpo": "trained",
        "refdpo": "skipped",
        "sft": "skipped",
    }
    assert "resuming diff-dpo from step" in (out / "_sweep" / "diff-dpo.log").read_text()
    counts = store.query(
        "select run, count(*) as n, count(distinct step) as steps from train_metrics group by run order by run"
    )
    assert counts.values.tolist() == [["diff-dpo", 8, 8], ["refdpo", 8, 8], ["sft", 8, 8]]


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_with_a_checkpoint(toy_world, tmp_path):
    """Ctrl-C at a terminal (SIGINT to the sweep's whole process group) while a run trains: exit code 130
    and one line on stderr; the run is 'interrupted' with a checkpoint (not killed half-way), and the
    rerun finishes it with each step once."""
    db, out = tmp_path / "db.duckdb", tmp_path / "runs"
    specs = _specs(toy_world, ["refdpo"], 40)
    script = (
        "import sys; from pathlib import Path; from refbench.experiments.sweep import grid_specs, run_specs\n"
        "from refbench.errors import RunInterrupted\n"
        f"specs = grid_specs(['refdpo'], max_steps=40, extra={specs[0].overrides!r})\n"
        "try:\n"
        f"    run_specs(specs, db=Path({str(db)!r}), out_root=Path({str(out)!r}), jobs=1, progress=False)\n"
        "except RunInterrupted as exc:\n"
        "    print(exc, file=sys.stderr); sys.exit(130)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], start_new_session=True, stderr=subprocess.PIPE, text=True
    )
    # Evidence that the loop is under way, polled as a file: the checkpoint of step 2 (checkpoint_every
    # = 2), so the SIGINT goes with about 38 of the 40 steps still to train however loaded the
    # machine (waiting for store rows let the run finish first under load).
    wait_for_checkpoint(out / "refdpo", 2, still_going=lambda: process.poll() is None)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.strip() == "sweep interrupted; run the same command again to resume it"
    record = Store(db).get_run("refdpo")
    assert record["status"] == "interrupted" and "stopped at step" in record["message"]
    log = (out / "_sweep" / "refdpo.log").read_text()
    assert "checkpoint saved" in log
    assert run_specs(specs, db=db, out_root=out, jobs=1, progress=False) == {"refdpo": "trained"}
    counts = Store(db).query("select count(*) as n, count(distinct step) as steps from train_metrics")
    assert counts.values.tolist() == [[40, 40]]


def test_split_seconds_separates_other_and_idle_time():
    """Two runs on 2 workers in 100 s of wall time: 200 worker-seconds. Run a (wall 86.5 s): trainer
    clock 60 s (its train step took 64 s: 4 s of loading are other), generate 20, score 2. Run b
    (wall 38.2 s) was finished before (no train step, so its stored 50 s of training do not count):
    generate 30, score 3, timestep-analysis 5. Totals: training 60, sampling 50, scoring 5,
    analysis 5 = 120; the runs' walls sum to 124.7, so other = 4.7 s (2.35 per run) and idle =
    200 - 124.7 = 75.3 s."""
    from refbench.experiments.plan_costs import split_seconds

    timings = {
        "a": {"train": 64.0, "generate": 20.0, "score": 2.0, "wall": 86.5},
        "b": {"generate": 30.0, "score": 3.0, "timestep-analysis": 5.0, "wall": 38.2},
    }
    costs = split_seconds(timings, {"a": 60.0, "b": 50.0}, wall=100.0, workers=2)
    assert costs["totals"] == {"training": 60.0, "sampling": 50.0, "scoring": 5.0, "analysis": 5.0}
    assert costs["other"] == pytest.approx(4.7) and costs["other_per_run"] == pytest.approx(2.35)
    assert costs["idle"] == pytest.approx(75.3)
    assert costs["runs"]["b"] == {"training": 0.0, "sampling": 30.0, "scoring": 3.0, "analysis": 5.0, "wall": 38.2}
    # one run on 2 workers: only one worker's time counts (90 s wall, 86.5 s of it the run's)
    assert split_seconds({"a": timings["a"]}, {"a": 60.0}, wall=90.0, workers=2)["idle"] == pytest.approx(3.5)


def test_reproduce_refuses_a_bad_worker_count_before_making_anything(tmp_path):
    from refbench.errors import RefbenchError
    from refbench.experiments.reproduce import reproduce

    for jobs, threads in ((0, 1), (2, 0)):
        with pytest.raises(RefbenchError, match=f"--jobs and --threads must be >= 1; got {jobs} and {threads}"):
            reproduce(
                results=tmp_path / "results",
                db=tmp_path / "r.duckdb",
                out_root=tmp_path / "runs",
                jobs=jobs,
                threads=threads,
                seeds=1,
            )
    assert list(tmp_path.iterdir()) == []
