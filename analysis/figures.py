"""The paper's figures, drawn from the store (matplotlib). Each returns the Figure; ``out`` saves a PNG.

Names follow `refbench plot KIND`: kl (Fig. 1b), divergence-vs-score (Fig. 1c), timestep
(Fig. 2), tau (Fig. 4), divergence-by-timestep (Fig. 5).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files, never windows: this runs in tests, notebooks and on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import reads  # noqa: E402

__all__ = ["plot_kl", "plot_divergence_vs_score", "plot_timestep", "plot_tau", "plot_divergence_by_timestep"]


def _save(figure, out: str | Path | None):
    figure.tight_layout()
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out, dpi=120)
    return figure


def _require(frame, what: str) -> None:
    if frame.empty:
        raise ValueError(f"nothing to plot: no {what} in the store for these runs")


def plot_kl(db, runs: list[str], *, smooth: int = 20, out=None):
    """Fig. 1(b): reward margin (solid, rolling mean over ``smooth`` steps) and divergences from the
    initial model (dotted: D(policy, init) for fixed-reference runs, D(ref, init) for syncing ones)."""
    curves = reads.train_curves(db, runs)
    _require(curves, "train_metrics")
    settings = reads.run_settings(db, runs).set_index("run")
    figure, (margin_axis, divergence_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for run, group in curves.groupby("run", sort=False):
        margin = group["margin"].rolling(smooth, min_periods=1).mean()
        line, = margin_axis.plot(group["step"], margin, label=run)
        syncing = run in settings.index and settings.loc[run, "reference"] == "sync"
        column = "div_ref" if syncing else "div_policy"
        measured = group.dropna(subset=[column])
        divergence_axis.plot(measured["step"], measured[column], linestyle=":", color=line.get_color(),
                             label=f"{run}: D({'ref' if syncing else 'policy'}, init)")
    margin_axis.set(xlabel="step", ylabel=f"implicit reward margin (mean of {smooth} steps)", title="reward margin")
    divergence_axis.set(xlabel="step", ylabel="D(., init)", title="divergence from the initial model")
    for axis in (margin_axis, divergence_axis):
        axis.axhline(0, color="gray", linewidth=0.5)
        axis.legend(fontsize=8)
    return _save(figure, out)


def plot_divergence_vs_score(db, runs: list[str], *, metric: str = "human", prompt_set: str = "toy-test", out=None):
    """Fig. 1(c): each run's final D(policy, init) against its mean score."""
    divergence = reads.final_divergence(db, runs)
    scores = reads.mean_scores(db, runs, prompt_set=prompt_set, metrics=[metric])
    merged = divergence.merge(scores, on="run")
    _require(merged, f"runs with both a divergence and {metric} scores")
    figure, axis = plt.subplots(figsize=(6, 4.5))
    axis.scatter(merged["div_policy"], merged["mean"])
    for row in merged.itertuples(index=False):
        axis.annotate(row.run, (row.div_policy, row.mean), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if len(merged) >= 3:  # a quadratic trend shows the rise-then-fall the paper describes, if it is there
        order = np.argsort(merged["div_policy"].to_numpy())
        x, y = merged["div_policy"].to_numpy()[order], merged["mean"].to_numpy()[order]
        coefficients = np.polyfit(x, y, 2)
        grid = np.linspace(x.min(), x.max(), 100)
        axis.plot(grid, np.polyval(coefficients, grid), color="gray", linestyle="--", linewidth=1, label="quadratic fit")
        axis.legend(fontsize=8)
    axis.set(xlabel="final D(policy, init)", ylabel=f"mean {metric} score on {prompt_set}",
             title="divergence vs preference score")
    return _save(figure, out)


def plot_timestep(db, runs: list[str], *, analysis: str = "reference", out=None):
    """Fig. 2: per interval (noisiest on the left) the model's loss, |r_t|, accuracy, and lambda(t)."""
    stats = reads.timestep_stats(db, runs, analysis)
    _require(stats, f"timestep_stats (analysis {analysis!r}); run `refbench timestep-analysis RUN` first")
    figure, axes = plt.subplots(1, 4, figsize=(15, 3.6))
    panels = [("loss", "(a) model loss"), ("reward_scale", "(b) implicit reward scale |r_t|"),
              ("accuracy", "(c) preference accuracy"), ("lambda_t", "(d) lambda(t)")]
    for run, group in stats.groupby("run", sort=False):
        labels = [f"{lo}-{hi}" for lo, hi in zip(group["t_low"], group["t_high"])]
        for axis, (column, title) in zip(axes, panels):
            axis.plot(range(len(group)), group[column], marker="o", label=run)
            axis.set_title(title)
            axis.set_xticks(range(len(group)), labels, rotation=60, fontsize=7)
    axes[2].axhline(0.5, color="gray", linewidth=0.5)
    for axis in axes:
        axis.set_xlabel("t interval (start of generation on the left)")
    axes[0].legend(fontsize=8)
    return _save(figure, out)


def plot_tau(db, groups: dict[str, list[str]], *, baseline: str | None = "diff-dpo", metric: str = "human",
             prompt_set: str = "toy-test", out=None):
    """Fig. 4: mean score against tau, one line per group of runs (e.g. with / without regularisation)."""
    figure, axis = plt.subplots(figsize=(6, 4.5))
    plotted = False
    for label, runs in groups.items():
        settings = reads.run_settings(db, runs)
        scores = reads.mean_scores(db, runs, prompt_set=prompt_set, metrics=[metric])
        merged = settings.merge(scores, on="run").sort_values("tau")
        if merged.empty:
            continue
        axis.plot(merged["tau"], merged["mean"], marker="o", label=label)
        plotted = True
    if not plotted:
        raise ValueError("nothing to plot: none of the tau runs has scores")
    if baseline:
        base = reads.mean_scores(db, [baseline], prompt_set=prompt_set, metrics=[metric])
        if not base.empty:
            axis.axhline(float(base["mean"].iloc[0]), color="gray", linestyle="--", label=baseline)
    axis.set(xlabel="reference update period tau (steps)", ylabel=f"mean {metric} score on {prompt_set}",
             title="sensitivity to tau")
    axis.set_xscale("log", base=2)
    axis.legend(fontsize=8)
    return _save(figure, out)


def relative_divergence(db, runs: dict[str, str], relative_to: str, analysis: str = "reference"):
    """Per interval, each run's divergence as a percentage of ``relative_to``'s (Fig. 5's 100%)."""
    stats = reads.timestep_stats(db, [relative_to, *runs.values()], analysis)
    _require(stats, "timestep_stats")
    base = stats[stats["run"] == relative_to].set_index("bin")["divergence"]
    rows = []
    for label, run in runs.items():
        for row in stats[stats["run"] == run].itertuples(index=False):
            if row.bin in base.index and base[row.bin] != 0:
                rows.append({"label": label, "run": run, "bin": row.bin, "t_low": row.t_low, "t_high": row.t_high,
                             "percent": 100.0 * row.divergence / base[row.bin]})
    import pandas as pd

    return pd.DataFrame(rows)


def plot_divergence_by_timestep(db, runs: dict[str, str], *, relative_to: str, analysis: str = "reference", out=None):
    """Fig. 5: divergence from init per interval, as % of the reference-update-only run's."""
    table = relative_divergence(db, runs, relative_to, analysis)
    _require(table, f"intervals shared with {relative_to}")
    figure, axis = plt.subplots(figsize=(7, 4))
    labels = list(dict.fromkeys(table["label"]))
    width = 0.8 / max(1, len(labels))
    for offset, label in enumerate(labels):
        group = table[table["label"] == label]
        axis.bar(group["bin"] + offset * width, group["percent"], width=width, label=label)
    ticks = table.drop_duplicates("bin").sort_values("bin")
    axis.set_xticks(ticks["bin"] + width * (len(labels) - 1) / 2,
                    [f"{lo}-{hi}" for lo, hi in zip(ticks["t_low"], ticks["t_high"])], rotation=60, fontsize=7)
    axis.axhline(100, color="gray", linestyle="--", linewidth=1, label=f"{relative_to} = 100%")
    axis.set(xlabel="t interval (start of generation on the left)", ylabel="D(policy, init), % of reference",
             title="divergence per timestep interval")
    axis.legend(fontsize=8)
    return _save(figure, out)
