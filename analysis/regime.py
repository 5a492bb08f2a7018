"""Diffusion-DPO's validation curve (issue 25's regime rule 2): what the store holds about each
(learning rate, length, seed) point, as a table and a figure. Reads the store, never trains."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .reads import holding, mean_scores, train_curves

__all__ = ["curve_frame", "curve_summary", "plot_curve"]


@holding
def curve_frame(
    db,
    points: dict[str, tuple[float, int, int]],
    *,
    prompt_set: str = "toy-val",
    metric: str = "human",
    base: str | None = "base",
) -> pd.DataFrame:
    """One row per point: run, lr, steps, seed, the mean ``metric`` on ``prompt_set`` and D(policy,
    init) measured at that step of the parent run. ``points`` maps a run (or snapshot run) to
    (lr, steps, seed); a snapshot's divergence is read from its parent's metrics (``RUN.stepS``).
    ``base`` adds the initial model as step 0 of every (lr, seed)."""
    scores = mean_scores(db, [*points, *([base] if base else [])], prompt_set=prompt_set, metrics=[metric])
    by_run = dict(zip(scores["run"], scores["mean"]))
    parents = {run: run.rsplit(".step", 1)[0] for run in points}
    curves = train_curves(db, sorted(set(parents.values())))
    divergence = {(r, s): d for r, s, d in curves[["run", "step", "div_policy"]].itertuples(index=False)}
    rows = [
        {
            "run": run,
            "lr": lr,
            "steps": steps,
            "seed": seed,
            metric: by_run.get(run),
            "div_policy": divergence.get((parents[run], steps)),
        }
        for run, (lr, steps, seed) in points.items()
    ]
    if base and base in by_run:
        for lr, seed in sorted({(lr, seed) for lr, _, seed in points.values()}):
            rows.append({"run": base, "lr": lr, "steps": 0, "seed": seed, metric: by_run[base], "div_policy": 0.0})
    return pd.DataFrame(rows).sort_values(["lr", "steps", "seed"]).reset_index(drop=True)


def curve_summary(frame: pd.DataFrame, metric: str = "human") -> pd.DataFrame:
    """Mean and SD over seeds per (lr, steps), with the mean divergence."""
    grouped = frame.groupby(["lr", "steps"])
    return pd.DataFrame(
        {
            "mean": grouped[metric].mean(),
            "sd": grouped[metric].std(ddof=1),
            "seeds": grouped[metric].count(),
            "div_policy": grouped["div_policy"].mean(),
        }
    ).reset_index()


def plot_curve(frame: pd.DataFrame, *, metric: str = "human", chosen: tuple[float, int] | None = None, out=None):
    """Validation ``metric`` against training steps, one line per learning rate (mean over seeds,
    bars one SD), and the same against D(policy, init)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = curve_summary(frame, metric)
    figure, (by_steps, by_divergence) = plt.subplots(1, 2, figsize=(10, 4))
    for lr, group in summary.groupby("lr"):
        by_steps.errorbar(
            group["steps"], group["mean"], yerr=group["sd"].fillna(0), marker="o", capsize=3, label=f"lr {lr:g}"
        )
        by_divergence.plot(group["div_policy"] * 1e3, group["mean"], marker="o", label=f"lr {lr:g}")
    if chosen is not None:
        point = summary[(summary["lr"] == chosen[0]) & (summary["steps"] == chosen[1])]
        by_steps.scatter(
            point["steps"], point["mean"], s=200, facecolors="none", edgecolors="black", zorder=5, label="chosen"
        )
    by_steps.set(
        xlabel="training steps",
        ylabel=f"mean {metric} on validation prompts",
        title="Diffusion-DPO: validation score by length",
    )
    by_divergence.set(
        xlabel="D(policy, init) x1e3", ylabel=f"mean {metric}", title="... by divergence from the initial model"
    )
    by_steps.legend(fontsize=8)
    by_divergence.legend(fontsize=8)
    figure.tight_layout()
    if out is not None:
        figure.savefig(Path(out), dpi=120)
        plt.close(figure)
    return figure
