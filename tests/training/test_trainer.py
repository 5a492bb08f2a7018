"""The one trainer on a small random-weight toy model: logging, reference updates, resume."""

import math

import pytest
import torch
from launch_helpers import accelerate_launch
from safetensors.torch import load_file
from toy_helpers import config_for

from refbench.config import load_config
from refbench.store import Store
from refbench.training.modelset import FullModelSet
from refbench.training.run import run_training


def train(config, tmp_path, **kwargs):
    return run_training(config, db=tmp_path / "db.duckdb", out_root=tmp_path / "runs", progress=False, **kwargs)


def test_refdpo_logs_every_step_and_its_syncs(toy_world, tmp_path):
    """Step 1: the policy equals the reference, so the margin is 0 and the loss log 2 = 0.693147,
    up to float32 rounding: errors near 1.1 agree to ~1e-7 (attention kernels differ with and
    without autograd), and the logit 0.5 * beta * lambda * margin <= 0.5 * 5000 * 2 * 1e-6 = 0.005
    moves the loss by at most 0.0025.
    tau 2 over 6 steps: syncs at steps 2, 4, 6 (delta 1.0 is far above a few steps' divergence)."""
    run_dir = train(config_for(toy_world), tmp_path)
    store = Store(tmp_path / "db.duckdb")
    metrics = store.query("select * from train_metrics where run = 'refdpo' order by step")
    assert metrics["step"].tolist() == [1, 2, 3, 4, 5, 6]
    assert metrics.loc[0, "margin"] == pytest.approx(0.0, abs=1e-6)
    assert metrics.loc[0, "loss"] == pytest.approx(math.log(2), abs=0.0025)
    assert metrics["div_policy"].notna().all() and metrics["lr"].gt(0).all()
    assert metrics["seconds"].is_monotonic_increasing
    events = store.query("select step, kind from ref_events where run = 'refdpo' order by step")
    assert events.values.tolist() == [[2, "sync"], [4, "sync"], [6, "sync"]]
    run = store.get_run("refdpo")
    assert run["status"] == "finished" and run["config"]["method"]["tau"] == 2 and "torch" in run["versions"]
    # Image-passes: 6 steps x 2 x 4 images through the policy (forward and backward) and the reference
    # (forward). The monitor (2 winners, every step): syncs at 2, 4, 6 measure the new reference only
    # (the policy holds its weights): 3 x 2; steps 1, 3, 5 measure the policy: 3 x 2, and the reference
    # at step 1 (afterwards it is cached until the next sync): 2; so 14. The initial model once: 2.
    assert costs(store, "refdpo") == {
        "policy": (48, 48),
        "reference": (48, 0),
        "monitor": (14, 0),
        "initial": (2, 0),
        "total": (112, 48),
    }
    assert store.query("select seconds from run_costs where kind = 'total'")["seconds"][0] > 0
    assert (run_dir / "final" / "unet" / "config.json").is_file()


def costs(store, run):
    frame = store.query("select kind, forward_images, backward_images from run_costs where run = ?", [run])
    return {kind: (forward, backward) for kind, forward, backward in frame.itertuples(index=False)}


def test_first_sync_past_delta_freezes(toy_world, tmp_path):
    """delta = 1e-12 and a large lr (1e-2, which raises the denoising error at once: D = 0.11 at
    step 2 on this random model): the sync at step 2 freezes and nothing follows."""
    config = config_for(toy_world, learning_rate=1e-2)
    train(
        load_config(
            config_file=None,
            method="refdpo",
            overrides={
                **config.to_dict(),
                "name": None,
                "preset": None,
                "method": {**config.to_dict()["method"], "delta": 1e-12},
            },
        ),
        tmp_path,
    )
    events = Store(tmp_path / "db.duckdb").query("select step, kind from ref_events order by step, kind")
    assert events.values.tolist() == [[2, "freeze"], [2, "sync"]]


def test_diff_dpo_reference_is_the_initial_model(toy_world, tmp_path):
    """A fixed reference is the initial model itself: no sync events, div_ref stays 0, no extra copy."""
    train(config_for(toy_world, method="diff-dpo"), tmp_path)
    store = Store(tmp_path / "db.duckdb")
    assert store.query("select count(*) as n from ref_events")["n"][0] == 0
    assert store.query("select max(abs(div_ref)) as d from train_metrics")["d"][0] == 0.0
    # 48 policy and reference image-passes as refdpo; the monitor measures the policy only: 6 x 2.
    assert costs(store, "diff-dpo") == {
        "policy": (48, 48),
        "reference": (48, 0),
        "monitor": (12, 0),
        "initial": (2, 0),
        "total": (110, 48),
    }
    unet = torch.nn.Linear(2, 2)
    fixed, syncing = (
        FullModelSet(unet, reference_mode="fixed"),
        FullModelSet(torch.nn.Linear(2, 2), reference_mode="sync"),
    )
    assert fixed.reference_module is fixed.initial_module
    assert syncing.reference_module is not syncing.initial_module


def test_resume_ends_with_the_same_weights(toy_world, tmp_path):
    """Stopped after step 3 (checkpoint at 3) and resumed to 6 == 6 steps straight (within 1e-6),
    for the policy and for the synced reference; metric rows are neither lost nor duplicated."""
    straight = train(config_for(toy_world, name="straight"), tmp_path / "a")
    stopped = config_for(toy_world, name="resumed", max_steps=3)
    train(stopped, tmp_path / "b")
    resumed = train(
        config_for(toy_world, name="resumed"), tmp_path / "b", resume=True, overrides={"training": {"max_steps": 6}}
    )
    for part in ("policy", "reference"):
        a = load_file(str(straight / "checkpoint" / f"{part}.safetensors"))
        b = load_file(str(resumed / "checkpoint" / f"{part}.safetensors"))
        assert a.keys() == b.keys()
        assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    rows = Store(tmp_path / "b" / "db.duckdb").query("select step from train_metrics order by step")["step"].tolist()
    assert rows == [1, 2, 3, 4, 5, 6]
    # The training passes carry over the checkpoint; each process measures the initial model once (2 + 2).
    resumed_costs, straight_costs = (
        costs(Store(tmp_path / "b" / "db.duckdb"), "resumed"),
        costs(Store(tmp_path / "a" / "db.duckdb"), "straight"),
    )
    assert resumed_costs["policy"] == straight_costs["policy"] == (48, 48)
    assert resumed_costs["reference"] == straight_costs["reference"] == (48, 0)
    assert resumed_costs["initial"] == (4, 0) and straight_costs["initial"] == (2, 0)


def test_same_name_without_resume_is_refused(toy_world, tmp_path):
    from refbench.errors import RefbenchError

    config = config_for(toy_world, max_steps=1)
    train(config, tmp_path)
    with pytest.raises(
        RefbenchError, match="already exists .* continue it with `refbench train --name refdpo --resume"
    ):
        train(config, tmp_path)


def test_sft_trains_on_winners_without_a_reference(toy_world, tmp_path):
    train(config_for(toy_world, method="sft", max_steps=2), tmp_path)
    metrics = Store(tmp_path / "db.duckdb").query("select loss, accuracy, ref_err_w from train_metrics order by step")
    assert metrics["loss"].gt(0).all() and metrics["accuracy"].isna().all() and metrics["ref_err_w"].isna().all()
    # 2 steps x 4 winners through the policy, no reference pass; the monitor's policy 2 x 2.
    assert costs(Store(tmp_path / "db.duckdb"), "sft") == {
        "policy": (8, 8),
        "reference": (0, 0),
        "monitor": (4, 0),
        "initial": (2, 0),
        "total": (14, 8),
    }


@pytest.mark.slow
def test_two_processes_take_identical_decisions(toy_world, tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo): the divergence is averaged before each
    decision, so both processes sync and freeze at the same steps and end with the same weights.
    With delta = 1e-12 and lr 1e-2 the denoising error rises within a few steps, so one sync
    measures D > delta: both processes freeze at that same step and no sync follows."""
    import os
    import subprocess

    args = [
        *accelerate_launch(2),
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "refbench",
        "train",
        "--model",
        str(toy_world / "base"),
        "--data",
        str(toy_world / "pairs.parquet"),
        "--max-steps",
        "6",
        "--tau",
        "2",
        "--delta",
        "1e-12",
        "--batch-size",
        "2",
        "--lr",
        "1e-2",
        "--db",
        str(tmp_path / "db.duckdb"),
        "--out",
        str(tmp_path / "runs"),
        "--no-progress",
    ]
    result = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    report = json.loads((tmp_path / "runs" / "refdpo" / "processes.json").read_text())
    assert [r["process"] for r in report] == [0, 1]
    assert report[0]["events"] == report[1]["events"]
    kinds = [(e["step"], e["kind"]) for e in report[0]["events"]]
    freezes = [step for step, kind in kinds if kind == "freeze"]
    assert len(freezes) == 1 and kinds[-1] == (freezes[0], "freeze")
    assert report[0]["policy_checksum"] == report[1]["policy_checksum"]
    assert report[0]["reference_checksum"] == report[1]["reference_checksum"]
    assert result.stdout.count("finished") == 1  # only the main process reports


@pytest.mark.slow
def test_ctrl_c_stops_at_a_step_boundary_with_a_checkpoint(toy_world, tmp_path, monkeypatch, capsys):
    """SIGINT during training: the run stops after the current step, saves a checkpoint at that
    step, and says on a line of its own (no "error:", exit code 130, as a shell's Ctrl-C) how to
    continue. That command, pasted as printed (it carries the non-default --db and --out; here with
    a lower --max-steps to stay short, which a resume may change), continues the run from there.
    The SIGINT goes once the progress bar shows a finished step (the loop is running); the pasted
    command runs in this process through the real entry point, from another folder."""
    import json
    import os
    import re
    import shlex
    import signal
    import subprocess
    import sys
    import threading
    import time

    from cli_helpers import run_refbench

    args = [
        sys.executable,
        "-m",
        "refbench",
        "train",
        "--model",
        str(toy_world / "base"),
        "--data",
        str(toy_world / "pairs.parquet"),
        "--max-steps",
        "400",
        "--batch-size",
        "2",
        "--db",
        str(tmp_path / "db.duckdb"),
        "--out",
        str(tmp_path / "runs"),
    ]  # with the progress bar: the message must still start a line
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    chunks: list[bytes] = []

    def read_stderr():
        while chunk := os.read(process.stderr.fileno(), 65536):
            chunks.append(chunk)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    run_dir = tmp_path / "runs" / "refdpo"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:  # until the bar shows a step done
        time.sleep(0.2)
        if re.search(rb"\b[1-9][0-9]*/400\b", b"".join(chunks)):
            break
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    reader.join(timeout=30)
    stderr = b"".join(chunks).decode().replace("\r\n", "\n").replace("\r", "\n")  # as text=True reads it
    assert process.returncode == 130, stderr[-2000:]
    last = stderr.rstrip("\n").split("\n")[-1]  # lines end at "\n" only: the bar redraws with "\r"
    assert last.startswith("interrupted at step") and "error" not in last
    assert "checkpoint saved" in stderr and "Traceback" not in stderr
    step = json.loads((run_dir / "checkpoint" / "state.json").read_text())["step"]
    assert f"interrupted at step {step};" in stderr
    assert Store(tmp_path / "db.duckdb").get_run("refdpo")["status"] == "interrupted"
    hint = shlex.split(last.split("Continue with: ", 1)[1])
    assert hint[:2] == ["refbench", "train"] and "--db" in hint and "--out" in hint
    monkeypatch.chdir(tmp_path)  # another folder: the hint must not rely on it
    code, out, err = run_refbench(monkeypatch, capsys, *hint[1:], "--max-steps", step + 2, "--no-progress")
    assert code == 0, err[-2000:]
    assert f"resuming refdpo from step {step}" in out
    assert Store(tmp_path / "db.duckdb").query("select max(step) as s from train_metrics")["s"][0] == step + 2
