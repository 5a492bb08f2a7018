"""Nothing lost, nothing run (issue 23): a checkpoint cannot run code, a resume continues the run
the store recorded (or says in one line why it cannot), corrupt files are one line and leave the
run's status as it was, and the hints refbench prints work when pasted as printed.

One small run is trained once (in this process, on the random-weight toy model of conftest) and
stopped at step 2 as Ctrl-C would stop it; each test works on its own copy of that run's store and
folder.
"""

from __future__ import annotations

import pickle
import shlex
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from cli_helpers import run_refbench as refbench

from refbench.config import load_config
from refbench.errors import RunInterrupted
from refbench.store import Store
from refbench.training.run import run_training

NAME = "stopped"


class Payload:
    """Unpickled, it creates the file ``marker``: proof that loading ran code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@contextmanager
def _stop_at_once():
    yield {"stop": True}  # as if Ctrl-C came during the first step: stop after it, with a checkpoint


@pytest.fixture(scope="module")
def stopped_template(toy_world, tmp_path_factory):
    """A refdpo run of 4 steps (tau 1, so a reference file is saved too), stopped after step 1 and
    resumed and stopped again after step 2: status 'interrupted', checkpoint at step 2."""
    import refbench.training.trainer as trainer_module

    root = tmp_path_factory.mktemp("stopped")
    (root / "small.toml").write_text(
        "[method]\ntau = 1\n[training]\nbatch_size = 2\nmonitor_size = 2\nmonitor_every = 1\n"
        "checkpoint_every = 100\nlr_warmup_steps = 0\nmax_steps = 4\n"
    )
    config = load_config(
        method="refdpo",
        name=NAME,
        config_file=root / "small.toml",
        overrides={
            "model": {"pretrained": str(toy_world / "base")},
            "data": {"source": str(toy_world / "pairs.parquet")},
        },
    )
    original = trainer_module.stop_requests
    trainer_module.stop_requests = _stop_at_once
    try:
        for resume in (False, True):
            with pytest.raises(RunInterrupted):
                run_training(config, db=root / "db.duckdb", out_root=root / "runs", progress=False, resume=resume)
    finally:
        trainer_module.stop_requests = original
    return root


@pytest.fixture
def stopped(stopped_template, tmp_path):
    """A private copy of the stopped run (its store row points at the copy's folder)."""
    root = tmp_path / "copy"
    shutil.copytree(stopped_template, root)
    with Store(root / "db.duckdb").connect() as con:
        con.execute("UPDATE runs SET run_dir = ?", [str((root / "runs" / NAME).resolve())])
    return root


def status(root: Path) -> tuple[str, str, int]:
    store = Store(root / "db.duckdb")
    run = store.get_run(NAME)
    steps = store.query("select max(step) as s from train_metrics where run = ?", [NAME])["s"][0]
    return run["status"], run["message"], int(steps)


def resume_args(root: Path, *extra) -> list:
    return ["train", "--name", NAME, "--resume", "--db", root / "db.duckdb", "--no-progress", *extra]


def test_the_template_is_what_the_tests_assume(stopped):
    """Stopped twice, at steps 1 and 2: status interrupted, 'stopped at step 2', every file a resume reads."""
    state, message, steps = status(stopped)
    assert (state, steps) == ("interrupted", 2) and message.startswith("stopped at step 2;")
    checkpoint = stopped / "runs" / NAME / "checkpoint"
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "optimizer.pt",
        "policy.safetensors",
        "reference.safetensors",
        "state.json",
    ]


# -- 1. nothing in a run folder is unpickled -------------------------------------------------------


@pytest.mark.parametrize(
    "file",
    [
        "checkpoint/optimizer.pt",
        "checkpoint/policy.safetensors",
        "checkpoint/reference.safetensors",
        "checkpoint/state.json",
        "config.json",
    ],
)
def test_a_planted_pickle_payload_is_not_run_and_the_error_is_one_line(stopped, tmp_path, monkeypatch, capsys, file):
    """Each file a resume reads, replaced by a pickle whose unpickling would create a file. The
    control shows the payload is live: torch.load(weights_only=False) runs it. The resume runs
    nothing, exits 2 with one line naming the file, and the run stays 'interrupted' at step 2."""
    marker = tmp_path / "code-ran"
    path = stopped / "runs" / NAME / file
    if file.endswith(".pt"):  # torch's own format, the payload inside the state it expects
        torch.save({"optimizer": Payload(marker), "lr_scheduler": {}}, path)
        torch.load(path, weights_only=False)  # the control: an unsafe load runs it
        assert marker.exists()
        marker.unlink()
    else:
        path.write_bytes(pickle.dumps(Payload(marker)))
    code, _, err = refbench(monkeypatch, capsys, *resume_args(stopped, "--max-steps", "4"))
    assert not marker.exists()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("error: ") and str(path) in err
    state, message, steps = status(stopped)
    assert state == "interrupted" and message.startswith("stopped at step 2;") and steps == 2


# -- 2. `refbench query` can only read ---------------------------------------------------------------


@pytest.fixture
def two_stores(tmp_path):
    """A store with one run, another store with one run, and a file that must stay as it is."""
    main, other = Store(tmp_path / "main.duckdb"), Store(tmp_path / "other.duckdb")
    for store in (main, other):
        store.create_run(
            "r", method="refdpo", preset="toy", config={}, seed=0, run_dir="x", git_revision=None, versions={}
        )
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    return tmp_path, victim


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize(
    "sql",
    [
        "COPY (SELECT 'overwritten') TO '{victim}'",
        "COPY runs TO '{folder}/export.parquet' (FORMAT parquet)",
        "ATTACH '{folder}/other.duckdb' AS o (READ_WRITE); DROP TABLE o.runs",
        "ATTACH '{folder}/other.duckdb' AS o",
        "ATTACH ':memory:' AS m",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "RESET enable_external_access",
        "SET lock_configuration = false",
        "SELECT * FROM read_csv('{victim}')",
        "INSERT INTO runs (name) VALUES ('planted')",
        "DELETE FROM runs",
        "DROP TABLE runs",
        "CREATE TABLE planted AS SELECT 1",
        "EXPORT DATABASE '{folder}/exported'",
    ],
)
def test_query_refuses_anything_but_reading_in_one_line(two_stores, monkeypatch, capsys, sql):
    """Each statement: exit 2, one line that says the query only reads (or failed), and every file in
    the folder byte for byte as it was, no new file or folder."""
    folder, victim = two_stores
    before = _snapshot(folder)
    names_before = sorted(p.name for p in folder.iterdir())
    code, out, err = refbench(
        monkeypatch, capsys, "query", sql.format(victim=victim, folder=folder), "--db", folder / "main.duckdb"
    )
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("error: query refused: `refbench query` only reads") or err.startswith("error: query failed:")
    assert _snapshot(folder) == before and sorted(p.name for p in folder.iterdir()) == names_before
    assert victim.read_text() == "keep me"
    assert Store(folder / "other.duckdb").get_run("r") is not None


def test_query_still_reads(two_stores, monkeypatch, capsys):
    folder, _ = two_stores
    code, out, err = refbench(
        monkeypatch, capsys, "query", "select name, method from runs", "--format", "csv", "--db", folder / "main.duckdb"
    )
    assert code == 0 and out.strip() == "name,method\nr,refdpo"


# -- 4. corrupt or missing files are one line; the status keeps its real step ------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CORRUPTIONS = {
    "truncated policy": ("checkpoint/policy.safetensors", _truncate, "is corrupt or truncated"),
    "empty reference": ("checkpoint/reference.safetensors", lambda p: p.write_bytes(b""), "is corrupt or truncated"),
    "truncated optimizer": ("checkpoint/optimizer.pt", _truncate, "is corrupt or truncated"),
    "missing optimizer": ("checkpoint/optimizer.pt", lambda p: p.unlink(), "is missing"),
    "broken state": ("checkpoint/state.json", lambda p: p.write_text('{"step": 2,'), "is not readable JSON"),
    "state without step": ("checkpoint/state.json", lambda p: p.write_text('{"elapsed": 1}'), "lacks step"),
    "broken config": ("config.json", lambda p: p.write_text("{"), "is not readable JSON"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_a_corrupt_or_missing_checkpoint_file_is_one_line_and_keeps_the_status(stopped, monkeypatch, capsys, case):
    file, damage, words = CORRUPTIONS[case]
    path = stopped / "runs" / NAME / file
    damage(path)
    code, _, err = refbench(monkeypatch, capsys, *resume_args(stopped))
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(path) in err and words in err
    if file.startswith("checkpoint/"):  # says what to do
        assert "restore it from a copy, or delete" in err
    state, message, steps = status(stopped)
    assert state == "interrupted" and message.startswith("stopped at step 2;") and steps == 2


def test_weights_of_another_model_are_one_line(stopped, monkeypatch, capsys):
    """A policy file whose tensors do not fit the run's model (a checkpoint of another config)."""
    from safetensors.torch import load_file, save_file

    path = stopped / "runs" / NAME / "checkpoint" / "policy.safetensors"
    weights = load_file(str(path))
    save_file({key: value[..., :1].contiguous() for key, value in weights.items()}, str(path))
    code, _, err = refbench(monkeypatch, capsys, *resume_args(stopped))
    assert code == 2 and len(err.splitlines()) == 1 and "does not fit this run's model" in err
    state, message, steps = status(stopped)
    assert state == "interrupted" and message.startswith("stopped at step 2;") and steps == 2


def test_a_half_truncated_store_is_one_line(stopped, monkeypatch, capsys):
    """A store cut in half: `train` and `runs` say which file and what to do, in one line."""
    db = stopped / "db.duckdb"
    with Store(db).connect() as con:  # make the file big enough that half of it loses table data
        con.execute("CREATE TABLE filler AS SELECT range AS x, range * 2 AS y FROM range(200000)")
    _truncate(db)
    for args in (
        ["train", "--name", "other", "--db", db, "--out", stopped / "runs", "--max-steps", "1"],
        ["runs", "--db", db],
        ["query", "select count(*) from filler", "--db", db],
    ):
        code, _, err = refbench(monkeypatch, capsys, *args)
        assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, (args, err)
        assert str(db) in err
    assert not (stopped / "runs" / "other").exists()


# -- 3. a run knows where it lives -------------------------------------------------------------------


def test_the_hint_of_refbench_runs_pasted_as_printed_continues_the_run(stopped, monkeypatch, capsys):
    """`refbench runs` prints, for the stopped run, a command with the --db and --out it was trained
    with. Run as printed, from another folder, it continues the run from step 2 in its own folder,
    with its stored config (4 steps, not the toy default of 300), and finishes it."""
    code, _, err = refbench(monkeypatch, capsys, "runs", "--db", stopped / "db.duckdb")
    assert code == 0
    hint = next(line for line in err.splitlines() if line.startswith(f"{NAME} was stopped"))
    words = shlex.split(hint.split("continue it with: ", 1)[1])
    assert words[:2] == ["refbench", "train"] and "--db" in words and "--out" in words
    monkeypatch.chdir(stopped.parent)
    code, out, err = refbench(monkeypatch, capsys, *words[1:], "--no-progress")
    assert code == 0, err
    assert f"resuming {NAME} from step 2" in out
    state, _, steps = status(stopped)
    assert (state, steps) == ("finished", 4)
    assert (stopped / "runs" / NAME / "final" / "unet").is_dir()
    assert not (stopped.parent / "runs").exists()  # nothing started in the folder it was pasted in


def test_resume_refuses_a_store_or_folder_that_does_not_hold_the_run(stopped, tmp_path, monkeypatch, capsys):
    """--resume with the wrong store (the default, or another file), a name the store lacks, or an
    --out that is not the run's: one line each, and no store, row or folder is made."""
    monkeypatch.chdir(tmp_path)
    other = tmp_path / "other.duckdb"
    Store(other)
    cases = [
        (resume_args(stopped)[:4] + ["--no-progress"], "error: no store at runs/refbench.duckdb"),
        (
            ["train", "--name", NAME, "--resume", "--db", other],
            f"error: --resume: the store {other} holds no run named",
        ),
        (["train", "--name", "nobody", "--resume", "--db", stopped / "db.duckdb"], "holds no run named 'nobody'"),
        (resume_args(stopped, "--out", tmp_path / "elsewhere"), f"error: --resume: run '{NAME}' lives in"),
    ]
    for args, message in cases:
        code, _, err = refbench(monkeypatch, capsys, *args)
        assert code == 2 and len(err.splitlines()) == 1 and message in err, (args, err)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "elsewhere").exists()
    assert Store(other).list_runs().empty
    assert status(stopped)[0] == "interrupted"


def test_a_run_in_the_store_or_its_folder_is_never_overwritten_without_resume(stopped, monkeypatch, capsys):
    """Training a name the store holds, or into a folder that holds a run another store knows, is
    refused in one line; the refusal names the command that continues the run."""
    checkpoint = (stopped / "runs" / NAME / "checkpoint" / "policy.safetensors").read_bytes()
    base = ["train", "--name", NAME, "--out", stopped / "runs", "--no-progress"]
    code, _, err = refbench(monkeypatch, capsys, *base, "--db", stopped / "db.duckdb")
    assert code == 2 and "already exists" in err and "--resume" in err and len(err.splitlines()) == 1
    code, _, err = refbench(monkeypatch, capsys, *base, "--db", stopped / "fresh.duckdb")
    assert code == 2 and "already holds a run named" in err and len(err.splitlines()) == 1
    assert (stopped / "runs" / NAME / "checkpoint" / "policy.safetensors").read_bytes() == checkpoint


def test_a_finished_run_resumed_again_is_left_alone(stopped, monkeypatch, capsys):
    """Finish the run; a second --resume (or --start-or-resume, as `make demo` runs) does nothing and
    says so; --max-steps above the last step trains further."""
    assert refbench(monkeypatch, capsys, *resume_args(stopped))[0] == 0
    final = stopped / "runs" / NAME / "final" / "unet" / "diffusion_pytorch_model.safetensors"
    before = final.stat().st_mtime_ns
    for flag in ("--resume", "--start-or-resume"):
        args = [
            "train",
            "--name",
            NAME,
            flag,
            "--db",
            stopped / "db.duckdb",
            "--out",
            stopped / "runs",
            "--no-progress",
        ]
        code, out, _ = refbench(monkeypatch, capsys, *args)
        assert code == 0 and f"run {NAME} already finished at step 4; nothing to do" in out
    assert final.stat().st_mtime_ns == before and status(stopped)[:1] == ("finished",)
    code, out, _ = refbench(monkeypatch, capsys, *resume_args(stopped, "--max-steps", "5"))
    assert code == 0 and f"resuming {NAME} from step 4" in out and status(stopped)[2] == 5


def test_resume_with_a_store_row_but_no_checkpoint_starts_from_step_0_and_says_so(stopped, monkeypatch, capsys):
    shutil.rmtree(stopped / "runs" / NAME / "checkpoint")
    code, out, _ = refbench(monkeypatch, capsys, *resume_args(stopped))
    assert code == 0 and "no checkpoint yet" in out and "starting from step 0" in out
    assert status(stopped)[:1] == ("finished",)


def test_start_or_resume_starts_a_run_the_store_does_not_hold(toy_world, tmp_path, monkeypatch, capsys):
    args = [
        "train",
        "--start-or-resume",
        "--name",
        "fresh",
        "--model",
        toy_world / "base",
        "--data",
        toy_world / "pairs.parquet",
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        "--db",
        tmp_path / "db.duckdb",
        "--out",
        tmp_path / "runs",
        "--no-progress",
    ]
    code, out, err = refbench(monkeypatch, capsys, *args)
    assert code == 0, err
    assert Store(tmp_path / "db.duckdb").get_run("fresh")["status"] == "finished"
    code, _, err = refbench(monkeypatch, capsys, "train", "--resume", "--start-or-resume", "--name", "x")
    assert code == 2 and err == "error: --resume and --start-or-resume: give one of them"


# -- 5. the small ones ---------------------------------------------------------------------------------


def test_an_empty_name_is_refused(monkeypatch, capsys):
    code, _, err = refbench(monkeypatch, capsys, "train", "--name", "")
    assert code == 2 and err.startswith("error: name: must be 1-200 letters") and len(err.splitlines()) == 1


def test_a_failed_start_leaves_no_run_folder(toy_world, tmp_path, monkeypatch, capsys):
    """A model that is not there: one line, and neither a run folder (not even one holding only its
    lock file) nor a store row is left."""
    code, _, err = refbench(
        monkeypatch,
        capsys,
        "train",
        "--name",
        "nomodel",
        "--model",
        tmp_path / "nope",
        "--data",
        toy_world / "pairs.parquet",
        "--db",
        tmp_path / "db.duckdb",
        "--out",
        tmp_path / "runs",
    )
    assert code == 2 and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # nor the --out folder it made for it
    assert Store(tmp_path / "db.duckdb").get_run("nomodel") is None


def test_a_store_in_a_missing_folder_is_created_with_a_notice_and_read_commands_refuse_one(
    toy_world, tmp_path, monkeypatch, capsys
):
    """`train --db NEW/db.duckdb` makes the folder and says so on a line of its own; the commands
    that read what others wrote (runs, query, score, winrate, timestep-analysis, plot) refuse a store
    that is not there in one line and make nothing."""
    db = tmp_path / "new" / "db.duckdb"
    code, _, err = refbench(
        monkeypatch,
        capsys,
        "train",
        "--name",
        "n",
        "--model",
        toy_world / "base",
        "--data",
        toy_world / "pairs.parquet",
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        "--db",
        db,
        "--out",
        tmp_path / "runs",
        "--no-progress",
    )
    assert code == 0 and err.splitlines()[0] == f"new store {db} in the new folder {db.parent}"
    missing = tmp_path / "typo" / "db.duckdb"
    for args in (
        ["runs", "--db", missing],
        ["query", "select 1", "--db", missing],
        ["score", "base", "--db", missing],
        ["winrate", "n", "--baseline", "base", "--db", missing],
        ["timestep-analysis", "n", "--db", missing],
        ["plot", "kl", "--runs", "n", "--db", missing],
    ):
        code, _, err = refbench(monkeypatch, capsys, *args)
        assert (
            code == 2 and err == f"error: no store at {missing}; train a run first, or pass --db with an existing store"
        )
    assert not missing.parent.exists()
