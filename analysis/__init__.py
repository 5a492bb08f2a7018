"""Analyses over the refbench store: tables and figures. Reads, never trains.

from analysis import load_results, figures, tables, claims
store = load_results()                      # results/reproduce.duckdb or the parquet export
figures.plot_kl(store, ["diff-dpo", "ref-noreg", "refdpo"])
"""

from .reads import load_results

__all__ = ["load_results"]
