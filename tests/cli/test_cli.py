"""The command line, run as a user runs it: a real process, exit codes, stdout and stderr."""

import os
import subprocess
import sys

import pytest


def refbench(*args, cwd=None):
    env = {**os.environ, "REFBENCH_LOCK_TIMEOUT": "1"}
    return subprocess.run([sys.executable, "-m", "refbench", *args], capture_output=True, text=True, cwd=cwd, env=env)


@pytest.mark.slow
def test_help_lists_commands_and_imports_nothing_heavy():
    result = refbench("--help")
    assert result.returncode == 0
    for command in ("runs", "query", "config"):
        assert command in result.stdout
    probe = "import sys, refbench.cli.app; print(sorted(m for m in ('torch', 'diffusers', 'duckdb', 'pandas') if m in sys.modules))"
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert imported == "[]"


@pytest.mark.slow
def test_runs_and_query_on_a_new_store(tmp_path):
    from refbench.store import Store

    db = str(tmp_path / "x.duckdb")
    Store(db)
    result = refbench("runs", "--db", db)
    assert result.returncode == 0 and "no runs yet" in result.stdout
    result = refbench("query", "select 1", "--db", db)
    assert result.returncode == 0 and "1" in result.stdout
    assert refbench("query", "select 42 as answer", "--db", db, "--format", "csv").stdout.strip() == "answer\n42"
    assert '"answer": 42' in refbench("query", "select 42 as answer", "--db", db, "--format", "json").stdout


@pytest.mark.slow
def test_default_db_is_runs_refbench_duckdb_and_the_old_default_is_named(tmp_path):
    """The default store is runs/refbench.duckdb (beside the run folders, out of the repository's
    tracked results/); reading commands refuse a missing one, and name the store an earlier
    refbench kept at results/refbench.duckdb when it is there."""
    from refbench.cli.common import DB_OPTION
    from refbench.store import Store

    assert str(DB_OPTION.default) == "runs/refbench.duckdb"
    result = refbench("runs", cwd=tmp_path)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "error: no store at runs/refbench.duckdb; train a run first, or pass --db with an existing store"
    )
    Store(tmp_path / "results" / "refbench.duckdb")
    result = refbench("runs", cwd=tmp_path)
    assert result.returncode == 2 and "an earlier refbench kept its store at results/refbench.duckdb" in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (("config", "--method", "dpo"), "error: unknown method 'dpo'; valid: diff-dpo"),
        (("config", "--preset", "sd4"), "error: unknown preset 'sd4'; valid: sd15, sd3, sd35, sdxl, toy, toy-flow"),
        (("config", "--config", "missing.toml"), "error: config file not found: missing.toml"),
        (("query", "selec 1", "--db", "{db}"), "error: query failed: Parser Error"),
        (("query", "select 1", "--db", "{db}", "--format", "xml"), "error: unknown format 'xml'"),
        (("runs", "--db", "{bad}"), "error: cannot open the database"),
    ],
)
def test_bad_input_is_one_line_without_traceback(tmp_path, args, message):
    from refbench.store import Store

    bad = tmp_path / "bad.duckdb"
    bad.write_text("not a database")
    Store(tmp_path / "x.duckdb")
    args = [a.format(db=tmp_path / "x.duckdb", bad=bad) for a in args]
    result = refbench(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(message)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_locked_database_from_the_cli(tmp_path):
    from refbench.store import Store

    db = tmp_path / "x.duckdb"
    Store(db)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('on', flush=True); time.sleep(30)",
            str(db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "on"
        result = refbench("runs", "--db", str(db))
        assert (
            result.returncode == 2
            and "is locked by another process" in result.stderr
            and "Traceback" not in result.stderr
        )
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_config_prints_the_resolved_json():
    import json

    result = refbench("config", "--method", "ref-noreg", "--preset", "sd15")
    assert result.returncode == 0
    resolved = json.loads(result.stdout)
    assert resolved["method"]["on_exceed"] == "none" and resolved["method"]["beta"] == 5000.0
