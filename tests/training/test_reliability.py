"""Reliability (issue 8): killed runs, numerical faults, concurrent writers, bad configuration.

Real processes where the fault is a process's fate (SIGKILL, several writers on one database);
the rest in-process on a small random-weight toy model. Bad data: test_reliability_data.py.
"""

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from refbench.config import _SECTIONS, RunConfig, config_from_dict, load_config
from refbench.errors import ConfigError, RefbenchError
from refbench.store import Store
from refbench.training.run import run_training
from refbench.training.trainer import Trainer

PYTHON = sys.executable


@pytest.fixture(scope="module")
def toy_world(tmp_path_factory):
    """A random-weight toy model (the committed architecture) and 64 toy pairs, as in test_trainer."""
    from refbench.toy.model import build_components, save_components
    from refbench.toy.pairs import build_pairs, write_pairs

    root = tmp_path_factory.mktemp("toy")
    save_components(build_components(seed=0), root / "base")
    write_pairs(build_pairs(64, "train", seed=0), root / "pairs.parquet")
    (root / "small.toml").write_text(
        "[method]\ntau = 2\n[training]\nbatch_size = 2\nmonitor_size = 2\nmonitor_every = 1\ncheckpoint_every = 2\n"
        "lr_warmup_steps = 0\n"
    )
    return root


def config_for(toy_world, method="refdpo", name=None, method_overrides=None, **training):
    return load_config(
        method=method,
        name=name,
        config_file=toy_world / "small.toml",
        overrides={
            "model": {"pretrained": str(toy_world / "base")},
            "data": {"source": str(toy_world / "pairs.parquet")},
            "method": method_overrides or {},
            "training": {"max_steps": 6, **training},
        },
    )


def train(config, root, **kwargs):
    return run_training(config, db=root / "db.duckdb", out_root=root / "runs", progress=False, **kwargs)


def cli_train(toy_world, root, *extra):
    return [
        PYTHON,
        "-m",
        "refbench",
        "train",
        "--model",
        str(toy_world / "base"),
        "--data",
        str(toy_world / "pairs.parquet"),
        "--config",
        str(toy_world / "small.toml"),
        "--db",
        str(root / "db.duckdb"),
        "--out",
        str(root / "runs"),
        "--no-progress",
        *extra,
    ]


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def wait_for(condition, timeout: float, what: str, process=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process ended before {what}: {process.stderr.read()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- 1. interrupted runs, 4. concurrent writers: real processes on one database --------------------
SLOW_CHILD = """
import sys, time
from pathlib import Path
which, db, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
if which == "generate":
    from refbench.training.backends import samplers
    from refbench.evaluation.generate import generate
    original = samplers.ToySampler.__call__
    def slow(self, *args, **kwargs):
        time.sleep(0.4)
        return original(self, *args, **kwargs)
    samplers.ToySampler.__call__ = slow
    generate("base", prompt_set="toy-test", db=db, out_root=out, seeds=2, num_prompts=6, steps=2, batch_size=2, progress=False)
else:
    from refbench.evaluation import metrics
    from refbench.evaluation.score import score
    get = metrics.get_metric
    class Slow:
        def __init__(self, metric):
            self.metric, self.name = metric, metric.name
        def __call__(self, images, prompts):
            time.sleep(0.2)
            return self.metric(images, prompts)
    metrics.get_metric = lambda name: Slow(get(name))
    score("base", metrics="all", db=db, batch_size=2, progress=False)
"""


@pytest.fixture(scope="module")
def shared_db(toy_world, tmp_path_factory):
    """Real refbench processes on one DuckDB file, in two waves (one fixture, so that the processes
    overlap and their start-up, the slow part, is paid once on the 2-core machines).

    Wave 1, at once: `train killed` (SIGKILL once its checkpoint passes a random step, plus a random
    fraction of a step, so the kill lands mid-step, mid-checkpoint or mid-commit), `train other`
    launched twice (a sweep started twice), and `generate` (slowed, batches of 2; SIGKILL after its
    first committed batch); meanwhile this process writes rows and lists the runs.
    Wave 2: `train killed --resume` runs while this process reruns generate, then `score` (slowed)
    is killed after its first committed batch and rerun here. Then the same training uninterrupted.
    The tests that read it run on one pytest-xdist worker (conftest.SAME_WORKER), so it is built once."""
    from refbench.evaluation.generate import generate
    from refbench.evaluation.score import score

    root = tmp_path_factory.mktemp("shared")
    db, out = root / "db.duckdb", root / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REFBENCH_LOCK_TIMEOUT": "60"}
    chooser = random.Random()
    kill_after, extra_delay = chooser.randint(2, 9), chooser.uniform(0.0, 0.4)
    result = {"where": f"(train killed once its checkpoint reached step {kill_after}, + {extra_delay:.2f} s)"}
    state = out / "killed" / "checkpoint" / "state.json"

    def checkpoint_step() -> int:
        try:
            return json.loads(state.read_text())["step"]
        except (OSError, ValueError, KeyError):
            return 0

    def count(sql: str, wait: float = 0.2) -> int:
        try:
            return int(Store(db, lock_timeout=wait).query(sql).iloc[0, 0])
        except RefbenchError:  # not created yet, or busy: ask again
            return 0

    def start(args):
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    killed = start(cli_train(toy_world, root, "--max-steps", "12", "--name", "killed"))
    others = [start(cli_train(toy_world, root, "--max-steps", "6", "--name", "other")) for _ in range(2)]
    child = start([PYTHON, "-c", SLOW_CHILD, "generate", str(db), str(out)])
    writer, written, deadline = Store(db, lock_timeout=60), 0, time.monotonic() + 240
    while any(p.poll() is None for p in (killed, child, *others)) and time.monotonic() < deadline:
        if killed.poll() is None and checkpoint_step() >= kill_after:
            time.sleep(extra_delay)
            killed.send_signal(signal.SIGKILL)
            killed.wait()
            result["committed"] = Store(db, lock_timeout=60).query(
                "select step, loss from train_metrics where run = 'killed' order by step"
            )
        if child.poll() is None and count("select count(*) from samples") > 0:
            child.send_signal(signal.SIGKILL)
            child.wait()
            result["made"] = count("select count(*) from samples", wait=60)
        writer.upsert(
            "winrates",
            [
                {"run": "writer", "baseline": "base", "metric": f"m{written + i}", "prompt_set": "x", "rate": 0.5}
                for i in range(5)
            ],
        )
        written += 5
        writer.list_runs()
        time.sleep(0.1)
    result["wave1"] = {
        name: (p.returncode, *p.communicate(timeout=30))
        for name, p in (("killed", killed), ("generate", child), ("other", others[0]), ("other again", others[1]))
    }
    result["written"] = written

    resumed = start(cli_train(toy_world, root, "--max-steps", "12", "--name", "killed", "--resume"))
    result["generate rerun"] = generate(
        "base", prompt_set="toy-test", db=db, out_root=out, seeds=2, num_prompts=6, steps=2, progress=False
    )
    child = start([PYTHON, "-c", SLOW_CHILD, "score", str(db), str(out)])
    wait_for(lambda: count("select count(*) from scores") > 0, 120, "the first score batch", child)
    child.send_signal(signal.SIGKILL)
    child.wait()
    result["scored"] = count("select count(*) from scores", wait=60)
    result["score child"] = child.returncode
    result["score rerun"] = score("base", metrics="all", db=db, progress=False)
    result["resumed"] = (resumed.wait(timeout=240), *resumed.communicate())

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the processes (OMP_NUM_THREADS=1): the same float rounding
    try:
        result["straight"] = train(config_for(toy_world, name="straight", max_steps=12), root / "straight")
    finally:
        torch.set_num_threads(threads)
    result.update(root=root, store=Store(db), straight_store=Store(root / "straight" / "db.duckdb"))
    return result


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_loses_and_duplicates_nothing(shared_db):
    """After SIGKILL and `--resume`: every metric row committed before the kill is still there with
    the same value, none is duplicated, the events are those of an uninterrupted run, and the final
    weights (policy and synced reference) equal the uninterrupted run's within 1e-6."""
    where, store, run_dir = shared_db["where"], shared_db["store"], shared_db["root"] / "runs" / "killed"
    code, _, err = shared_db["wave1"]["killed"]
    assert code == -signal.SIGKILL, f"the run ended before the kill {where}: {err[-2000:]}"
    code, out, err = shared_db["resumed"]
    assert code == 0, f"{where}\n{err[-3000:]}"
    assert "resuming killed from step" in out
    straight = shared_db["straight"]
    for part, a, b in [
        (
            "policy",
            straight / "final" / "unet" / "diffusion_pytorch_model.safetensors",
            run_dir / "final" / "unet" / "diffusion_pytorch_model.safetensors",
        ),
        (
            "reference",
            straight / "checkpoint" / "reference.safetensors",
            run_dir / "checkpoint" / "reference.safetensors",
        ),
    ]:
        assert max_difference(load_file(str(a)), load_file(str(b))) <= 1e-6, f"{part} weights differ {where}"
    final = store.query("select step, loss from train_metrics where run = 'killed' order by step")
    assert final["step"].tolist() == list(range(1, 13)), where
    by_step = dict(zip(final["step"], final["loss"]))
    committed = shared_db["committed"]
    assert len(committed) > 0, where
    for step, loss in zip(committed["step"], committed["loss"]):  # none lost, none changed
        assert by_step[step] == pytest.approx(loss, abs=1e-6), f"step {step} {where}"
    reference = shared_db["straight_store"].query("select step, loss from train_metrics order by step")
    assert final["loss"].tolist() == pytest.approx(reference["loss"].tolist(), abs=1e-5), where
    events = store.query("select step, kind from ref_events where run = 'killed' order by step, kind")
    expected = shared_db["straight_store"].query("select step, kind from ref_events order by step, kind")
    assert events.values.tolist() == expected.values.tolist(), where
    assert store.get_run("killed")["status"] == "finished"


def test_a_checkpoint_is_written_only_once_its_rows_are_committed(toy_world, tmp_path, monkeypatch):
    """A run resumed from the checkpoint of step N starts at N + 1, so the rows up to N must be in
    the store before that checkpoint exists: a kill between the two would lose them for good (the
    SIGKILL test above found this when the store was busy)."""
    import refbench.training.trainer as trainer_module

    original, seen = trainer_module.save_checkpoint, []

    def checking(folder, **kwargs):
        stored = Store(tmp_path / "db.duckdb").query("select step from train_metrics order by step")["step"].tolist()
        seen.append((kwargs["state"]["step"], stored))
        return original(folder, **kwargs)

    monkeypatch.setattr(trainer_module, "save_checkpoint", checking)
    train(config_for(toy_world, max_steps=4), tmp_path)
    assert seen == [(2, [1, 2]), (4, [1, 2, 3, 4])]


@pytest.mark.slow
def test_killed_generate_and_score_are_finished_by_a_rerun_without_redoing(shared_db):
    """generate and score killed after their first committed batch: the rerun does only what is
    missing, and every (prompt, seed) and every (sample, metric) is there exactly once."""
    from refbench.training.data import decode_image

    store = shared_db["store"]
    assert shared_db["wave1"]["generate"][0] == -signal.SIGKILL and shared_db["score child"] == -signal.SIGKILL
    made = shared_db["made"]
    assert 0 < made < 12
    counts = shared_db["generate rerun"]
    assert (counts["generated"], counts["present"]) == (12 - made, made)
    assert store.query("select count(*), count(distinct (prompt, seed)) from samples").values.tolist() == [[12, 12]]
    for path in store.query("select image_path from samples")["image_path"]:
        assert decode_image(Path(path).read_bytes()).shape[-1] == 3  # no half-written image is kept
    added, scored = shared_db["score rerun"], shared_db["scored"]
    assert 0 < scored < 12 * len(added)
    assert sum(added.values()) == 12 * len(added) - scored
    rows = store.query("select count(*), count(distinct (sample_id, metric)) from scores")
    assert rows.values.tolist() == [[12 * len(added), 12 * len(added)]]


@pytest.mark.slow
def test_concurrent_processes_neither_corrupt_the_database_nor_crash(shared_db):
    """Up to four refbench processes and this one wrote to the file at once: `train other` launched
    twice trains once (the second is refused in one line: its run is locked, or already exists),
    every step of every run is stored once, every row this process wrote is there, every table reads."""
    store, wave1 = shared_db["store"], shared_db["wave1"]
    codes = sorted([wave1["other"][0], wave1["other again"][0]])
    assert codes == [0, 2], {k: v[2][-1500:] for k, v in wave1.items()}
    refused = next(err for code, _, err in (wave1["other"], wave1["other again"]) if code == 2)
    lines = refused.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused
    assert "is being trained by another process" in lines[0] or "already exists" in lines[0], lines[0]
    assert store.get_run("other")["status"] == "finished"
    assert store.query("select step from train_metrics where run = 'other' order by step")["step"].tolist() == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]
    written = shared_db["written"]
    assert store.query(
        "select count(*), count(distinct metric) from winrates where run = 'writer'"
    ).values.tolist() == [[written, written]]
    for table in ("runs", "train_metrics", "ref_events", "samples", "scores", "winrates", "timestep_stats"):
        store.query(f"select * from {table}")  # every table still reads


# -- 2. numerical faults -------------------------------------------------------------------------
class NanGradient(torch.autograd.Function):
    """The identity forward, NaN gradients backward: a finite loss with non-finite gradients."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


FAULTS = {
    "inf-loss": lambda loss: loss + float("inf"),  # Inf loss, finite gradients: only a loss check sees it
    "nan-loss": lambda loss: loss * float("nan"),
    "nan-grad": NanGradient.apply,
}


@pytest.fixture
def poisoned(monkeypatch):
    """Make the loss of chosen steps non-finite; record the policy weights at the start of each step."""
    original = Trainer._micro_step
    plan, weights = {}, {}

    def micro_step(self, batch, generator):
        step = self.step + 1
        weights.setdefault(step, {k: v.detach().clone() for k, v in self.models.policy_state().items()})
        values = original(self, batch, generator)
        fault = plan.get(step, plan.get("from") if step >= plan.get("from_step", 10**9) else None)
        return {**values, "loss": FAULTS[fault](values["loss"])} if fault else values

    monkeypatch.setattr(Trainer, "_micro_step", micro_step)
    return plan, weights


def test_nonfinite_loss_or_gradient_is_skipped_counted_and_recorded(toy_world, tmp_path, poisoned):
    """Step 2: Inf loss (finite gradients); step 3: NaN loss; step 5: NaN gradients. Each is
    skipped: the weights at the start of the next step equal those at its start (a normal step
    changes them), the step is counted, an event is stored, and its row holds NULL, not NaN."""
    plan, weights = poisoned
    plan.update({2: "inf-loss", 3: "nan-loss", 5: "nan-grad"})
    train(config_for(toy_world, max_steps=6), tmp_path)
    for step in (2, 3, 5):
        assert max_difference(weights[step], weights[step + 1]) == 0.0, f"step {step} reached the weights"
    assert max_difference(weights[1], weights[2]) > 0 and max_difference(weights[4], weights[5]) > 0
    store = Store(tmp_path / "db.duckdb")
    events = store.query("select step, kind from ref_events where kind like 'nonfinite%' order by step")
    assert events.values.tolist() == [[2, "nonfinite-loss"], [3, "nonfinite-loss"], [5, "nonfinite-grad"]]
    run = store.get_run("refdpo")
    assert run["status"] == "finished" and run["message"].startswith("3 steps skipped (3 non-finite)")
    losses = store.query("select step, loss from train_metrics order by step")
    assert losses["loss"].isna().tolist() == [False, True, True, False, False, False]  # NULL for Inf and NaN
    assert store.query("select count(*) from train_metrics where isnan(loss) or isinf(loss)").iloc[0, 0] == 0


def test_too_many_nonfinite_steps_stop_the_run_as_diverged(toy_world, tmp_path, poisoned):
    """From step 3 on every loss is NaN; training.max_nonfinite_steps = 2 stops the run at step 4
    with one line, status 'diverged' in runs, two events, and the metrics up to step 4 stored."""
    plan, weights = poisoned
    plan.update({"from": "nan-loss", "from_step": 3})
    with pytest.raises(RefbenchError) as error:
        train(config_for(toy_world, max_steps=10, max_nonfinite_steps=2), tmp_path)
    message = str(error.value)
    assert "\n" not in message and "diverged" in message and "training.max_nonfinite_steps = 2" in message
    store = Store(tmp_path / "db.duckdb")
    assert store.get_run("refdpo")["status"] == "diverged"
    assert store.query("select max(step) from train_metrics").iloc[0, 0] == 4
    assert store.query("select count(*) from ref_events where kind like 'nonfinite%'").iloc[0, 0] == 2
    assert max_difference(weights[3], weights[4]) == 0.0


def test_a_diverging_run_is_recorded_as_diverged_not_a_crash(toy_world, tmp_path):
    """ref-noreg, tau 1, lr 10: the weights grow until the model's outputs are NaN (step 4 on this
    model). The run ends with one line and status 'diverged'; the weights it keeps are finite."""
    config = config_for(
        toy_world,
        method="ref-noreg",
        method_overrides={"tau": 1},
        max_steps=30,
        learning_rate=10.0,
        max_nonfinite_steps=3,
    )
    with pytest.raises(RefbenchError, match=r"^run ref-noreg diverged: 3 steps had a non-finite loss") as error:
        train(config, tmp_path)
    assert "\n" not in str(error.value)
    store = Store(tmp_path / "db.duckdb")
    run = store.get_run("ref-noreg")
    assert run["status"] == "diverged" and "3 non-finite" in run["message"]
    assert store.query("select count(*) from ref_events where kind = 'nonfinite-loss'").iloc[0, 0] == 3


# -- 5. bad configuration and environment --------------------------------------------------------
INVALID = {  # one invalid value per config field; a new field without an entry fails the walk
    "name": "two words",
    "preset": "sd4",
    "method": {
        "name": "",
        "objective": "bogus",
        "params": "text",
        "reference": "bogus",
        "tau": 0,
        "delta": 0.0,
        "on_exceed": "bogus",
        "mixup_alpha": 1.5,
        "timestep_sampler": "bogus",
        "gamma": 0.0,
        "bins": 0,
        "reward_scale": "bogus",
        "beta": float("inf"),
        "desirable_weight": 0.0,
        "undesirable_weight": -1.0,
        "mapo_snr": float("inf"),
    },
    "model": {
        "kind": "sd4",
        "pretrained": "",
        "resolution": 12,
        "lora_rank": -1,
        "gradient_checkpointing": "yes",
        "mixed_precision": "fp8",
        "vae": "",
        "vae_fp32": "yes",
        "t5": False,
        "offload_frozen": "yes",
    },
    "data": {
        "source": "",
        "split": "",
        "max_pairs": 0,
        "exclude_prompts": "",
        "latent_cache": "",
        "latent_dtype": "float8",
        "num_workers": -1,
        "caption_dropout": 1.0,
        "random_flip": "yes",
        "columns": {"winner": "good"},
    },
    "training": {
        "max_steps": 0,
        "batch_size": 0,
        "gradient_accumulation_steps": 0,
        "learning_rate": float("nan"),
        "scale_lr": "yes",
        "lr_scheduler": "linear",
        "lr_warmup_steps": -1,
        "weight_decay": -0.1,
        "max_grad_norm": 0.0,
        "seed": -1,
        "log_every": 0,
        "monitor_every": 0,
        "monitor_size": 0,
        "checkpoint_every": 0,
        "max_nonfinite_steps": 0,
        "effective_batch": -1,
        "optimizer": "sgd",
        "report_to": "mlflow",
        "snapshot_steps": [0],
    },
}
ALTERNATIVE = {  # a second invalid value where the first tests the type, or a range has two ends
    ("method", "gamma"): 1.5,
    ("method", "params"): {1: 2},
    ("data", "columns"): {"caption": 3},
    ("method", "delta"): float("nan"),
    ("method", "tau"): "8",
    ("training", "seed"): 2**63,
    ("training", "learning_rate"): -1.0,
    ("model", "resolution"): 0,
    ("method", "mixup_alpha"): 0.0,
    ("name", None): "..",
}


def config_cases():
    hints = typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(RunConfig):
        if f.name in _SECTIONS:
            cls = hints[f.name]
            yield f.name, None, "not a table"
            for inner in dataclasses.fields(cls):
                yield f.name, inner.name, INVALID[f.name].get(inner.name, "<missing from INVALID>")
        else:
            yield f.name, None, INVALID.get(f.name, "<missing from INVALID>")
    for (section, name), value in ALTERNATIVE.items():
        yield section, name, value


def test_every_config_field_rejects_an_invalid_value_in_one_line():
    """Walk every field of every config dataclass: an invalid value is one ConfigError line that
    starts with the field's name and says what is allowed ("must ...") and what was given."""
    seen = 0
    for section, name, value in config_cases():
        assert value != "<missing from INVALID>", f"no invalid value for {section}.{name}: add one to INVALID"
        raw = {section: {name: value}} if name else {section: value}
        with pytest.raises(ConfigError) as error:
            config_from_dict(raw)
        message = str(error.value)
        label = f"{section}.{name}" if name else section
        assert "\n" not in message, message
        assert message.startswith(f"{label}: must"), message
        assert "got" in message or "empty" in message, message
        seen += 1
    assert seen >= 40


def test_invalid_values_from_a_config_file_and_the_command_line_are_one_line(tmp_path, monkeypatch, capsys):
    """TOML's nan and inf, and --lr inf on the command line, are refused before anything runs."""
    path = tmp_path / "bad.toml"
    path.write_text("[method]\nbeta = inf\n")
    with pytest.raises(ConfigError, match=r"^method\.beta: must be a finite number; got inf$"):
        load_config(config_file=path)
    code, err = run_cli(monkeypatch, capsys, "train", "--lr", "nan", "--db", str(tmp_path / "db.duckdb"))
    assert code == 2 and err == "error: training.learning_rate: must be a finite number; got nan"
    assert not (tmp_path / "db.duckdb").exists()


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    """The CLI's entry point in this process (as `refbench ARGS`); returns (exit code, stderr)."""
    from refbench.cli.app import main

    monkeypatch.setattr(sys, "argv", ["refbench", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code, capsys.readouterr().err.strip()


@pytest.mark.slow
def test_unwritable_database_or_run_folder_is_one_line_before_training(toy_world, tmp_path, monkeypatch, capsys):
    """A database or --out below a regular file (unwritable even for root): exit 2, one line, no
    run started (no runs row, no checkpoint). A run folder in use by another process: one line."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    common = [
        "--model",
        str(toy_world / "base"),
        "--data",
        str(toy_world / "pairs.parquet"),
        "--max-steps",
        "2",
        "--no-progress",
    ]
    code, err = run_cli(
        monkeypatch, capsys, "train", *common, "--db", str(blocker / "db.duckdb"), "--out", str(tmp_path / "runs")
    )
    assert (
        code == 2 and len(err.splitlines()) == 1 and err.startswith("error: cannot create the folder for the database")
    )
    assert not (tmp_path / "runs").exists()
    code, err = run_cli(
        monkeypatch, capsys, "train", *common, "--db", str(tmp_path / "db.duckdb"), "--out", str(blocker / "runs")
    )
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: cannot write the run folder")
    assert Store(tmp_path / "db.duckdb").query("select count(*) from runs").iloc[0, 0] == 0

    folder = tmp_path / "runs" / "refdpo"
    folder.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            PYTHON,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
            "fcntl.flock(f, fcntl.LOCK_EX); f.write('4242'); f.flush(); print('on', flush=True); "
            "time.sleep(30)",
            str(folder / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "on"
        code, err = run_cli(
            monkeypatch, capsys, "train", *common, "--db", str(tmp_path / "db.duckdb"), "--out", str(tmp_path / "runs")
        )
        assert code == 2 and err == (
            "error: run 'refdpo' is being trained by another process (process 4242); "
            "wait for it to end, or pick another --name"
        )
    finally:
        holder.kill()
        holder.wait()


def test_missing_model_or_weights_is_one_sentence(toy_world, tmp_path, monkeypatch, capsys):
    """--model that does not exist, or a model folder without weights: one line naming
    model.pretrained, for the toy world and for the SD path, before any data is read."""
    import shutil

    no_weights = tmp_path / "no-weights"
    shutil.copytree(toy_world / "base", no_weights)
    for weights in (no_weights / "unet").glob("*.safetensors"):
        weights.unlink()
    sd_no_weights = tmp_path / "sd"
    (sd_no_weights / "unet").mkdir(parents=True)
    (sd_no_weights / "unet" / "config.json").write_text("{}")
    cases = [
        ([], tmp_path / "missing", "error: model.pretrained: no toy model at"),
        ([], no_weights, "error: model.pretrained: " + str(no_weights) + " has no weights in unet/"),
        (
            ["--preset", "sd15"],
            tmp_path / "missing",
            "error: model.pretrained: " + str(tmp_path / "missing") + " does not exist",
        ),
        (
            ["--preset", "sd15"],
            sd_no_weights,
            "error: model.pretrained: " + str(sd_no_weights) + " has no weights in unet/",
        ),
    ]
    for extra, model, start in cases:
        code, err = run_cli(
            monkeypatch,
            capsys,
            "train",
            *extra,
            "--model",
            str(model),
            "--data",
            str(tmp_path / "nodata"),
            "--db",
            str(tmp_path / "db.duckdb"),
            "--out",
            str(tmp_path / "runs"),
            "--no-progress",
        )
        assert code == 2 and len(err.splitlines()) == 1 and err.startswith(start), err
        assert err.count(". ") == 0  # one sentence
    truncated = tmp_path / "truncated"  # weights there but cut short: one line too
    shutil.copytree(toy_world / "base", truncated)
    weights = next((truncated / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    code, err = run_cli(
        monkeypatch,
        capsys,
        "train",
        "--model",
        str(truncated),
        "--data",
        str(toy_world / "pairs.parquet"),
        "--db",
        str(tmp_path / "db.duckdb"),
        "--out",
        str(tmp_path / "runs"),
        "--no-progress",
    )
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"error: model.pretrained: cannot load the toy model at {truncated}:"), err
