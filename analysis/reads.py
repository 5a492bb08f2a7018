"""What the analyses read from the store, as pandas DataFrames. Read-only; SQL goes through Store."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from refbench.store import Store

__all__ = [
    "open_store",
    "train_curves",
    "ref_events",
    "timestep_stats",
    "mean_scores",
    "final_divergence",
    "run_settings",
    "winrates",
    "load_results",
    "results_folder",
    "run_costs",
]


def open_store(db: str | Path | Store) -> Store:
    return db if isinstance(db, Store) else Store(db)


def holding(function):
    """Run an analysis with its store (first argument) held open for reading: one connection for all
    its queries (``Store.held``) instead of one per query."""
    import functools

    @functools.wraps(function)
    def wrapper(db, *args, **kwargs):
        store = open_store(db)
        with store.held():
            return function(store, *args, **kwargs)

    return wrapper


def _in(runs: list[str]) -> tuple[str, list[str]]:
    return "(" + ", ".join("?" for _ in runs) + ")", list(runs)


def train_curves(db, runs: list[str]) -> pd.DataFrame:
    """Per run and step: loss, accuracy, margin and the divergences (NaN where not measured)."""
    marks, params = _in(runs)
    return open_store(db).query(
        f"SELECT run, step, loss, accuracy, margin, div_policy, div_ref FROM train_metrics WHERE run IN {marks} "
        "ORDER BY run, step",
        params,
    )


def ref_events(db, runs: list[str]) -> pd.DataFrame:
    marks, params = _in(runs)
    return open_store(db).query(
        f"SELECT run, step, kind, divergence FROM ref_events WHERE run IN {marks} ORDER BY run, step", params
    )


def timestep_stats(db, runs: list[str], analysis: str = "reference") -> pd.DataFrame:
    marks, params = _in(runs)
    return open_store(db).query(
        f"SELECT * FROM timestep_stats WHERE analysis = ? AND run IN {marks} ORDER BY run, bin", [analysis, *params]
    )


def mean_scores(db, runs: list[str], *, prompt_set: str = "toy-test", metrics: list[str] | None = None) -> pd.DataFrame:
    """Mean score per (run, metric) over the run's samples on the prompt set; columns run, metric, mean, n.
    Summed in sample order: DuckDB's parallel sum changes its last bits from one call to the next."""
    marks, params = _in(runs)
    frame = open_store(db).query(
        f"SELECT run, metric, avg(value ORDER BY sample_id) AS mean, count(*) AS n "
        f"FROM scores JOIN samples USING (sample_id) "
        f"WHERE prompt_set = ? AND run IN {marks} GROUP BY run, metric ORDER BY run, metric",
        [prompt_set, *params],
    )
    return frame if metrics is None else frame[frame["metric"].isin(metrics)]


def final_divergence(db, runs: list[str]) -> pd.DataFrame:
    """Last measured D(policy, init) and D(ref, init) per run (in run order: a GROUP BY's order varies)."""
    marks, params = _in(runs)
    return open_store(db).query(
        f"""SELECT run, arg_max(div_policy, step) AS div_policy, arg_max(div_ref, step) AS div_ref
            FROM train_metrics WHERE run IN {marks} AND div_policy IS NOT NULL GROUP BY run ORDER BY run""",
        params,
    )


SETTING_COLUMNS = [
    "run",
    "method",
    "objective",
    "reference",
    "tau",
    "on_exceed",
    "timestep_sampler",
    "gamma",
    "reward_scale",
    "beta",
    "learning_rate",
    "max_steps",
]


def run_settings(db, runs: list[str]) -> pd.DataFrame:
    """The settings that tell runs apart: method, tau, on_exceed, sampler, gamma, lambda, beta, lr, steps."""
    marks, params = _in(runs)
    frame = open_store(db).query(
        f"SELECT name, method, config FROM runs WHERE name IN {marks} ORDER BY created_at, name", params
    )
    rows = []
    for name, method, config in frame.itertuples(index=False):
        config = json.loads(config) if isinstance(config, str) else config
        m, t = config["method"], config["training"]
        rows.append(
            {
                "run": name,
                "method": method,
                "objective": m.get("objective"),
                "reference": m["reference"],
                "tau": m["tau"],
                "on_exceed": m["on_exceed"],
                "timestep_sampler": m["timestep_sampler"],
                "gamma": m["gamma"],
                "reward_scale": m["reward_scale"],
                "beta": m["beta"],
                "learning_rate": t["learning_rate"],
                "max_steps": t["max_steps"],
            }
        )
    return pd.DataFrame(rows, columns=SETTING_COLUMNS)


def winrates(db, run: str, baselines: list[str], prompt_set: str = "toy-test") -> pd.DataFrame:
    marks, params = _in(baselines)
    return open_store(db).query(
        f"SELECT baseline, metric, n, rate, ci_low, ci_high, mean_run, mean_baseline FROM winrates "
        f"WHERE run = ? AND prompt_set = ? AND baseline IN {marks} ORDER BY baseline, metric",
        [run, prompt_set, *params],
    )


def results_folder(world: str = "toy", regime: str = "paper") -> Path:
    """Where a world's results are: $REFBENCH_RESULTS or results/ in the working directory, failing
    that the repository's results/ (a notebook's working directory is notebooks/); the flow toy
    world's are its toy-flow/ subfolder, the UNet world's early regime its early-regime/ subfolder."""
    import os

    sub = "toy-flow" if world == "toy-flow" else "early-regime" if regime == "early" else ""
    here = Path(os.environ.get("REFBENCH_RESULTS", "results"))
    repository = Path(__file__).resolve().parents[1] / "results"
    for root in (here, repository):
        if (root / sub / "data" / "runs.parquet").is_file() or (root / sub / "reproduce.duckdb").is_file():
            return root / sub
    return repository / sub


def load_results(db: str | Path | None = None, world: str = "toy", regime: str = "paper") -> Store:
    """The store the notebooks read: ``db``, else $REFBENCH_DB, else the world's reproduce.duckdb,
    else its committed parquet export (``results_folder(world, regime)/data``) loaded into a
    temporary DuckDB file. ``world``: "toy" (results/; ``regime="early"``: results/early-regime/) or
    "toy-flow" (results/toy-flow/)."""
    import os
    import shutil
    import tempfile
    import weakref

    if db is not None:  # asked for by name: no silent fallback
        if not Path(db).is_file():
            raise FileNotFoundError(f"no database at {db}")
        return Store(db)
    if os.environ.get("REFBENCH_DB") and Path(os.environ["REFBENCH_DB"]).is_file():
        return Store(os.environ["REFBENCH_DB"])
    folder = results_folder(world, regime)
    if (folder / "reproduce.duckdb").is_file():
        return Store(folder / "reproduce.duckdb")
    if not (folder / "data" / "runs.parquet").is_file():
        raise FileNotFoundError(
            f"no store found: pass db=, set REFBENCH_DB, or run `refbench reproduce` (looked in {folder})"
        )
    temporary = Path(tempfile.mkdtemp(prefix="refbench-results-"))
    store = Store(temporary / "results.duckdb")
    weakref.finalize(store, shutil.rmtree, temporary, True)  # gone with the store, or at exit at the latest
    store.import_parquet(folder / "data")
    return store


def run_costs(db, runs: list[str]) -> pd.DataFrame:
    """Per run and kind (policy, reference, initial, monitor, total): forward and backward image-passes,
    and for 'total' the wall seconds of training (``training/costs.py``)."""
    marks, params = _in(runs)
    return open_store(db).query(f"SELECT * FROM run_costs WHERE run IN {marks} ORDER BY run, kind", params)
