"""Does a fresh reproduction give the committed numbers? Compares a store with the committed
parquet export (results/data/), table by table, over the runs both hold.

    python benchmarks/compare_to_committed.py runs-store.duckdb [--export results/data] [--runs-like '%-seed0']

Every column but wall-clock ones (seconds, created_at, updated_at) and paths must be equal
(NaN equal to NaN); prints one line per table and exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import duckdb
import pandas as pd

# table -> (columns that name a row, columns left out: clocks, paths, provenance of this checkout)
TABLES = {
    "train_metrics": (["run", "step"], ["seconds"]),
    "ref_events": (["run", "step", "kind"], []),
    "run_costs": (["run", "kind"], ["seconds"]),
    "samples": (["run", "prompt_set", "prompt", "seed"], ["image_path", "created_at", "sample_id"]),
    "scores": (["run", "prompt", "seed", "metric"], ["source", "sample_id"]),
    "timestep_stats": (["run", "analysis", "bin"], []),
    "winrates": (["run", "baseline", "metric", "prompt_set"], ["created_at"]),
}


def load(source, table: str, run_pattern: str) -> pd.DataFrame:
    if table == "scores":
        query = (
            "SELECT s.*, m.run, m.prompt, m.seed FROM {scores} s JOIN {samples} m USING (sample_id) WHERE m.run LIKE ?"
        )
    else:
        query = "SELECT * FROM {" + table + "} WHERE run LIKE ?"
    if isinstance(source, Path):  # the parquet export
        names = {t: f"read_parquet('{source / (t + '.parquet')}')" for t in ("scores", "samples", table)}
        connection = duckdb.connect()
    else:
        names = {t: t for t in ("scores", "samples", table)}
        connection = source
    return connection.execute(query.format(**names), [run_pattern]).df()


def compare(store: Path, export: Path, run_pattern: str) -> bool:
    connection = duckdb.connect(str(store), read_only=True)
    same = True
    for table, (keys, dropped) in TABLES.items():
        fresh, committed = load(connection, table, run_pattern), load(export, table, run_pattern)
        runs = sorted(set(fresh["run"]) & set(committed["run"]))
        if not runs:
            print(f"{table:15s} no run in both ({fresh['run'].nunique()} here, {committed['run'].nunique()} committed)")
            continue
        columns = [c for c in fresh.columns if c not in dropped and c in committed.columns]
        left = fresh[fresh["run"].isin(runs)][columns].sort_values(keys).reset_index(drop=True)
        right = committed[committed["run"].isin(runs)][columns].sort_values(keys).reset_index(drop=True)
        equal = len(left) == len(right) and left.equals(right)
        if not equal and len(left) == len(right):
            differing = [c for c in columns if not left[c].equals(right[c])]
            detail = f"columns differ: {', '.join(differing)}"
        else:
            detail = f"{len(left)} rows here, {len(right)} committed" if not equal else ""
        print(f"{table:15s} {len(runs):3d} runs {len(left):6d} rows  {'same' if equal else 'DIFFERENT: ' + detail}")
        same &= equal
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--export", type=Path, default=Path(__file__).resolve().parents[1] / "results" / "data")
    parser.add_argument("--runs-like", default="%", help="SQL LIKE pattern of the runs to compare (e.g. %%-seed0)")
    args = parser.parse_args()
    sys.exit(0 if compare(args.store, args.export, args.runs_like) else 1)


if __name__ == "__main__":
    main()
