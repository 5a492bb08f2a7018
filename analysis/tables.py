"""The paper's tables as markdown, from the store, over training seeds.

Table 1: refdpo's win rate against each baseline per metric, with a 95% interval over training
seeds and paired samples (``analysis.seeds``), and what each baseline costs. Tables 3 and 4: each
run's mean score over seeds, with its interval; the best mean of each metric in bold.
"""

from __future__ import annotations

import pandas as pd

from . import reads, seeds
from .costs import family_costs

__all__ = ["TOY_METRICS", "winrate_table", "raw_score_table", "cost_table", "to_markdown"]

TOY_METRICS = ["human", "colour", "count", "shape", "aesthetic"]  # the toy's five "reward models"


def to_markdown(frame: pd.DataFrame) -> str:
    def cell(v) -> str:
        return "" if pd.isna(v) else str(v).replace("|", "\\|")  # a "|" in a cell (|r_t|) would split it

    header = "| " + " | ".join(map(cell, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


@reads.holding
def winrate_table(
    db, run: str, rows: list[tuple[str, str]], *, metrics: list[str] | None = None, prompt_set: str = "toy-test"
) -> pd.DataFrame:
    """Table 1: one row per baseline, cells 'rate [CI low, high]' in % (ties half), the average over
    the sub-scores (every metric but ``human``, which is their weighted sum: averaging it with them
    would count them twice), the seeds x paired samples behind each cell, and the baseline's cost."""
    metrics = metrics or TOY_METRICS
    costs = family_costs(db, [run, *[b for _, b in rows]]).set_index("family")
    out = []
    for label, baseline in rows:
        cells, rates, shape = {}, [], ""  # rates: the sub-scores' win rates
        for metric in metrics:
            try:
                estimate = seeds.crossed(db, run, baseline, kind="win", metric=metric, prompt_set=prompt_set)
            except LookupError:
                continue
            cells[metric] = seeds.fmt(estimate, percent=True).replace("%", "")
            if metric != "human":
                rates.append(estimate.effect)
            shape = f"{estimate.seeds} x {estimate.samples}"
        if not cells:
            continue
        average = f"{100 * sum(rates) / len(rates):.1f}" if rates else ""
        row = {
            "": f"{run} {label}",
            **{m: cells.get(m, "") for m in metrics},
            "avg of sub-scores": average,
            "seeds x n": shape,
        }
        row["cost (fwd+bwd passes/step)"] = (
            f"{costs.loc[baseline, 'forward_per_step']:.0f}+{costs.loc[baseline, 'backward_per_step']:.0f}"
            if baseline in costs.index
            else ""
        )
        out.append(row)
    return pd.DataFrame(out)


@reads.holding
def raw_score_table(
    db, rows: list[tuple[str, str]], *, metrics: list[str] | None = None, prompt_set: str = "toy-test", digits: int = 3
) -> pd.DataFrame:
    """Tables 3 and 4: mean score per (row, metric) over seeds, 'mean [low, high]'; the best mean in bold."""
    from refbench.evaluation.metrics import get_metric

    metrics = metrics or TOY_METRICS
    estimates: dict[tuple[str, str], seeds.Interval] = {}
    for _, run in rows:
        for metric in metrics:
            try:
                estimates[run, metric] = seeds.score_estimate(db, run, metric=metric, prompt_set=prompt_set)
            except LookupError:
                pass
    present = [(label, run) for label, run in rows if any((run, m) in estimates for m in metrics)]
    best = {}
    for metric in metrics:
        values = [estimates[run, metric].effect for _, run in present if (run, metric) in estimates]
        if values:
            best[metric] = max(values) if get_metric(metric).higher_is_better else min(values)
    out = []
    for label, run in present:
        row = {"model": label, "run": run}
        for metric in metrics:
            estimate = estimates.get((run, metric))
            if estimate is None:
                row[metric] = ""
                continue
            mean = f"{estimate.effect:.{digits}f}"
            row[metric] = (
                f"**{mean}**" if estimate.effect == best.get(metric) else mean
            ) + f" [{estimate.ci_low:.{digits}f}, {estimate.ci_high:.{digits}f}]"
        row["seeds"] = max((estimates[run, m].seeds for m in metrics if (run, m) in estimates), default=0)
        out.append(row)
    return pd.DataFrame(out)


@reads.holding
def cost_table(db, families: list[str]) -> pd.DataFrame:
    """Per family: image-passes per step (forward, backward, monitor) and training seconds, means over seeds."""
    table = family_costs(db, families)
    for column in ("forward_per_step", "backward_per_step", "monitor_per_step"):
        table[column] = table[column].map(lambda v: f"{v:.1f}")
    table["train_seconds"] = table["train_seconds"].map(lambda v: f"{v:.0f}")
    return table
