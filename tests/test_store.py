"""The DuckDB store: schema, writes that replace rather than duplicate, and a locked file."""

import subprocess
import sys
import time

import pytest

from refbench.errors import StoreError
from refbench.store import TABLES, Store


def test_new_file_gets_every_table(tmp_path):
    store = Store(tmp_path / "sub" / "new.duckdb")
    names = set(store.query("select table_name from information_schema.tables")["table_name"])
    assert names == {"runs", "train_metrics", "ref_events", "timestep_stats", "samples", "scores", "winrates",
                     "metric_sources", "run_costs"}
    assert set(TABLES) == names


def test_runs_round_trip_and_listing(tmp_path):
    store = Store(tmp_path / "db.duckdb")
    store.create_run("refdpo", method="refdpo", preset="toy", config={"method": {"tau": 16}}, seed=3,
                     run_dir="runs/refdpo", git_revision="abc", versions={"torch": "2"})
    store.upsert("train_metrics", [{"run": "refdpo", "step": s, "loss": 0.69, "accuracy": 0.5} for s in (1, 2, 3)])
    store.upsert("ref_events", [{"run": "refdpo", "step": 2, "kind": "sync", "divergence": 0.001}])
    store.set_run_status("refdpo", "finished")
    run = store.get_run("refdpo")
    assert run["config"] == {"method": {"tau": 16}} and run["status"] == "finished" and run["seed"] == 3
    listing = store.list_runs()
    assert listing.loc[0, "name"] == "refdpo" and listing.loc[0, "steps"] == 3 and listing.loc[0, "ref_events"] == 1
    assert store.get_run("missing") is None


def test_upsert_replaces_rows_with_the_same_key(tmp_path):
    """Writing step 5 twice (as a resumed run would) keeps one row, with the later values."""
    store = Store(tmp_path / "db.duckdb")
    store.upsert("train_metrics", [{"run": "a", "step": 5, "loss": 1.0}])
    store.upsert("train_metrics", [{"run": "a", "step": 5, "loss": 0.5}, {"run": "a", "step": 6, "loss": 0.4}])
    frame = store.query("select step, loss from train_metrics order by step")
    assert frame.values.tolist() == [[5, 0.5], [6, 0.4]]
    with pytest.raises(ValueError, match="unknown columns"):
        store.upsert("train_metrics", [{"run": "a", "step": 7, "lost": 1.0}])


def test_bad_sql_is_one_line(tmp_path):
    with pytest.raises(StoreError, match="^query failed: Parser Error"):
        Store(tmp_path / "db.duckdb").query("selec 1")


def test_not_a_database(tmp_path):
    path = tmp_path / "text.duckdb"
    path.write_text("hello")
    with pytest.raises(StoreError, match="cannot open the database"):
        Store(path)


HOLD_LOCK = """
import duckdb, sys, time
connection = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
connection.close()
"""


def _hold_lock(path, seconds):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    return holder


def test_locked_database_gives_one_sentence(tmp_path):
    path = tmp_path / "db.duckdb"
    Store(path)
    holder = _hold_lock(path, 20)
    try:
        with pytest.raises(StoreError, match=r"is locked by another process \(process \d+\)"):
            Store(path, lock_timeout=0.5)
    finally:
        holder.kill()
        holder.wait()


def test_a_short_lock_is_waited_out(tmp_path):
    path = tmp_path / "db.duckdb"
    Store(path)
    holder = _hold_lock(path, 1.0)
    try:
        started = time.monotonic()
        store = Store(path, lock_timeout=30)
        store.upsert("ref_events", [{"run": "a", "step": 1, "kind": "sync", "divergence": 0.0}])
        assert time.monotonic() - started > 0.2  # it had to wait for the holder
        assert len(store.query("select * from ref_events")) == 1
    finally:
        holder.wait()
