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
    assert names == {
        "runs",
        "train_metrics",
        "ref_events",
        "timestep_stats",
        "samples",
        "scores",
        "winrates",
        "metric_sources",
        "run_costs",
        "pair_sets",
        "pair_candidates",
        "made_pairs",
    }
    assert set(TABLES) == names


def test_runs_round_trip_and_listing(tmp_path):
    store = Store(tmp_path / "db.duckdb")
    store.create_run(
        "refdpo",
        method="refdpo",
        preset="toy",
        config={"method": {"tau": 16}},
        seed=3,
        run_dir="runs/refdpo",
        git_revision="abc",
        versions={"torch": "2"},
    )
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
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "holding"
    return holder


@pytest.mark.slow
def test_locked_database_gives_one_sentence(tmp_path):
    path = tmp_path / "db.duckdb"
    Store(path)
    holder = _hold_lock(path, 20)
    try:
        with pytest.raises(StoreError, match=r"is locked by another process \(process \d+\)"):
            Store(path, lock_timeout=0.5).query("select 1")  # the schema was checked already: the read waits
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
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


def test_an_older_store_gains_the_new_columns_and_an_older_export_still_imports(tmp_path):
    """A store made before the protocol and cost records (samples without sampler/height/width/prompt-set
    sha256, scores without source/weights_sha256, no run_costs) opens with those columns added as NULL,
    keeps its rows, and a parquet export without them imports."""
    import duckdb

    old = tmp_path / "old.duckdb"
    with duckdb.connect(str(old)) as con:
        con.execute(
            "CREATE TABLE samples (sample_id VARCHAR PRIMARY KEY, run VARCHAR, prompt_set VARCHAR, prompt VARCHAR, "
            "seed BIGINT, image_path VARCHAR, guidance_scale DOUBLE, num_steps INTEGER, created_at TIMESTAMPTZ)"
        )
        con.execute("INSERT INTO samples VALUES ('s1', 'r', 'toy-test', 'p', 0, 'x.png', 3.0, 50, NULL)")
        con.execute(
            "CREATE TABLE scores (sample_id VARCHAR, metric VARCHAR, value DOUBLE, PRIMARY KEY (sample_id, metric))"
        )
        con.execute("INSERT INTO scores VALUES ('s1', 'human', 0.5)")
        con.execute("COPY samples TO '%s' (FORMAT parquet)" % (tmp_path / "samples.parquet"))
    store = Store(old)
    row = store.query("select * from samples").iloc[0]
    assert row["num_steps"] == 50 and row["sampler"] is None and row["prompt_set_sha256"] is None
    assert store.query("select source, weights_sha256 from scores").values.tolist() == [[None, None]]
    assert store.query("select count(*) as n from run_costs")["n"][0] == 0
    export = tmp_path / "export"
    export.mkdir()
    (tmp_path / "samples.parquet").rename(export / "samples.parquet")
    fresh = Store(tmp_path / "fresh.duckdb")
    assert fresh.import_parquet(export) == 1
    assert fresh.query("select run, num_steps, height is null as missing from samples").values.tolist() == [
        ["r", 50, True]
    ]


def test_held_serves_reads_from_one_connection_and_refuses_writes(tmp_path):
    store = Store(tmp_path / "db.duckdb")
    store.upsert("ref_events", [{"run": "a", "step": 1, "kind": "sync", "divergence": 0.0}])
    with store.held():
        with store.connect(read_only=True) as first, store.connect(read_only=True) as second:
            assert first is second
        assert len(store.query("select * from ref_events")) == 1
        with pytest.raises(StoreError, match="while it is held for reading"):
            store.upsert("ref_events", [{"run": "b", "step": 1, "kind": "sync", "divergence": 0.0}])
    store.upsert("ref_events", [{"run": "b", "step": 1, "kind": "sync", "divergence": 0.0}])  # released
    assert len(store.query("select * from ref_events")) == 2
