"""The paper's tables as markdown, from the store: Table 1 (win rates) and Tables 3-4 (raw mean scores)."""

from __future__ import annotations

import pandas as pd

from . import reads

__all__ = ["TOY_METRICS", "winrate_table", "raw_score_table", "to_markdown"]

TOY_METRICS = ["human", "colour", "count", "shape", "aesthetic"]  # the toy's five "reward models"


def to_markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def winrate_table(db, run: str, rows: list[tuple[str, str]], *, metrics: list[str] | None = None,
                  prompt_set: str = "toy-test") -> pd.DataFrame:
    """Table 1: one row per baseline, cells 'rate [CI low, high]' in %, and the average over metrics."""
    metrics = metrics or TOY_METRICS
    stored = reads.winrates(db, run, [baseline for _, baseline in rows], prompt_set)
    out = []
    for label, baseline in rows:
        mine = stored[(stored["baseline"] == baseline) & stored["metric"].isin(metrics)].set_index("metric")
        if mine.empty:
            continue
        cells = {m: (f"{100 * mine.loc[m, 'rate']:.1f} [{100 * mine.loc[m, 'ci_low']:.1f}, {100 * mine.loc[m, 'ci_high']:.1f}]"
                     if m in mine.index else "") for m in metrics}
        average = mine.loc[[m for m in metrics if m in mine.index], "rate"].mean()
        out.append({"": f"{run} {label}", **cells, "avg": f"{100 * average:.1f}", "n": int(mine["n"].max())})
    return pd.DataFrame(out)


def raw_score_table(db, rows: list[tuple[str, str]], *, metrics: list[str] | None = None, prompt_set: str = "toy-test",
                    digits: int = 3) -> pd.DataFrame:
    """Tables 3 and 4: mean score per (row, metric); the best value of each metric in bold."""
    from refbench.evaluation.metrics import get_metric

    metrics = metrics or TOY_METRICS
    scores = reads.mean_scores(db, [run for _, run in rows], prompt_set=prompt_set, metrics=metrics)
    wide = scores.pivot(index="run", columns="metric", values="mean")
    present = [(label, run) for label, run in rows if run in wide.index]
    best = {}
    for metric in metrics:
        if metric in wide.columns:
            column = wide.loc[[run for _, run in present], metric]
            best[metric] = column.max() if get_metric(metric).higher_is_better else column.min()
    out = []
    for label, run in present:
        row = {"model": label, "run": run}
        for metric in metrics:
            value = wide.loc[run, metric] if metric in wide.columns else float("nan")
            text = "" if pd.isna(value) else f"{value:.{digits}f}"
            row[metric] = f"**{text}**" if text and value == best.get(metric) else text
        out.append(row)
    return pd.DataFrame(out)
