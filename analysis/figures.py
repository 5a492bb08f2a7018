"""The paper's figures, drawn from the store (matplotlib). Each returns the Figure; ``out`` saves a PNG.

Names follow `refbench plot KIND`: kl (Fig. 1b), divergence-vs-score (Fig. 1c), timestep
(Fig. 2), samples (Fig. 3), tau (Fig. 4), divergence-by-timestep (Fig. 5).

Runs are given as families (``analysis.seeds``): ``refdpo`` means refdpo-seed0, -seed1, ... when
the store has them, else the run named ``refdpo``. Curves and points are means over a family's
training seeds, with the spread shown: Fig. 1(b) a band from the lowest to the highest seed,
Fig. 4 the 95% interval of ``seeds.score_estimate`` (seeds crossed with the shared prompts), Fig. 2
the binomial (Wilson) interval of each interval's mean accuracy over its pairs, each pair counted
once (every seed analyses the same pairs).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files, never windows: this runs in tests, notebooks and on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from refbench.method.interval_stats import binomial_interval  # noqa: E402

from . import reads, seeds  # noqa: E402

__all__ = [
    "plot_kl",
    "plot_divergence_vs_score",
    "plot_timestep",
    "plot_tau",
    "plot_divergence_by_timestep",
    "plot_samples",
    "divergence_by_timestep",
]


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


@reads.holding
def plot_kl(db, runs: list[str], *, smooth: int = 20, out=None):
    """Fig. 1(b): reward margin (solid, rolling mean over ``smooth`` steps) and divergences from the
    initial model (dotted: D(policy, init) for fixed-reference runs, D(ref, init) for syncing ones)."""
    index = seeds.families(db, runs)
    curves = reads.train_curves(db, [run for members in index.values() for run in members])
    _require(curves, "train_metrics")
    settings = reads.run_settings(db, list(curves["run"].unique())).set_index("run")
    figure, (margin_axis, divergence_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for family, members in index.items():
        group = curves[curves["run"].isin(members)]
        if group.empty:
            continue
        syncing = members[0] in settings.index and settings.loc[members[0], "reference"] == "sync"
        column = "div_ref" if syncing else "div_policy"
        margin = group.assign(
            margin=group.groupby("run")["margin"].transform(lambda m: m.rolling(smooth, min_periods=1).mean())
        )
        label = family + (f" ({len(members)} seeds)" if len(members) > 1 else "")
        line = _band(margin_axis, margin, "margin", label=label)
        _band(
            divergence_axis,
            group.dropna(subset=[column]),
            column,
            color=line.get_color(),
            linestyle=":",
            label=f"{family}: D({'ref' if syncing else 'policy'}, init)",
        )
    margin_axis.set(xlabel="step", ylabel=f"implicit reward margin (mean of {smooth} steps)", title="reward margin")
    divergence_axis.set(xlabel="step", ylabel="D(., init)", title="divergence from the initial model")
    for axis in (margin_axis, divergence_axis):
        axis.axhline(0, color="gray", linewidth=0.5)
        axis.legend(fontsize=8)
    return _save(figure, out)


def _band(axis, frame, column: str, **style):
    """The mean over runs per step (a line) and the range from the lowest to the highest run (a band)."""
    by_step = frame.groupby("step")[column].agg(["mean", "min", "max"])
    (line,) = axis.plot(by_step.index, by_step["mean"], **style)
    if frame["run"].nunique() > 1:
        axis.fill_between(by_step.index, by_step["min"], by_step["max"], color=line.get_color(), alpha=0.2, linewidth=0)
    return line


@reads.holding
def plot_divergence_vs_score(db, runs: list[str], *, metric: str = "human", prompt_set: str = "toy-test", out=None):
    """Fig. 1(c): each run's final D(policy, init) against its mean score."""
    index = seeds.families(db, runs)
    family_of = {run: family for family, members in index.items() for run in members}
    members = list(family_of)
    divergence = reads.final_divergence(db, members)
    scores = reads.mean_scores(db, members, prompt_set=prompt_set, metrics=[metric])
    merged = divergence.merge(scores, on="run")
    merged = (
        merged.assign(run=merged["run"].map(family_of))
        .groupby("run", sort=False)[["div_policy", "mean"]]
        .mean()
        .reset_index()
    )
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
        axis.plot(
            grid, np.polyval(coefficients, grid), color="gray", linestyle="--", linewidth=1, label="quadratic fit"
        )
        axis.legend(fontsize=8)
    axis.set(
        xlabel="final D(policy, init), mean over seeds",
        ylabel=f"mean {metric} score on {prompt_set}",
        title="divergence vs preference score",
    )
    return _save(figure, out)


@reads.holding
def plot_timestep(db, runs: list[str], *, analysis: str = "reference", out=None):
    """Fig. 2: per interval (noisiest on the left) the model's loss, |r_t|, accuracy, and lambda(t)."""
    index = seeds.families(db, runs)
    stats = reads.timestep_stats(db, [run for members in index.values() for run in members], analysis)
    _require(stats, f"timestep_stats (analysis {analysis!r}); run `refbench timestep-analysis RUN` first")
    figure, axes = plt.subplots(1, 4, figsize=(15, 3.6))
    panels = [
        ("loss", "(a) model loss"),
        ("reward_scale", "(b) implicit reward scale |r_t|"),
        ("accuracy", "(c) preference accuracy, 95% Wilson (pairs once)"),
        ("lambda_t", "(d) lambda(t)"),
    ]
    for family, members in index.items():
        group = _pooled_intervals(stats[stats["run"].isin(members)])
        if group.empty:
            continue
        labels = interval_labels(group)
        positions = np.arange(len(group))
        label = family + (f" ({len(members)} seeds)" if len(members) > 1 else "")
        for axis, (column, title) in zip(axes, panels):
            (line,) = axis.plot(positions, group[column], marker="o", label=label)
            if column == "accuracy":
                axis.fill_between(
                    positions,
                    group["accuracy_low"],
                    group["accuracy_high"],
                    color=line.get_color(),
                    alpha=0.2,
                    linewidth=0,
                )
            axis.set_title(title)
            axis.set_xticks(positions, labels, rotation=60, fontsize=7)
    axes[2].axhline(0.5, color="gray", linewidth=0.5)
    flow = "sigma_low" in stats and stats["sigma_low"].notna().all()
    for axis in axes:
        axis.set_xlabel(("noise level s" if flow else "t") + " interval (start of generation on the left)")
    axes[0].legend(fontsize=8)
    return _save(figure, out)


def interval_labels(frame) -> list[str]:
    """Interval names: "t_low-t_high" for DDPM models; a flow model's noise levels "s 0.90-1.00"."""
    if "sigma_low" in frame and frame["sigma_low"].notna().all():
        return [f"s {lo:.2f}-{hi:.2f}" for lo, hi in zip(frame["sigma_low"], frame["sigma_high"])]
    return [f"{lo}-{hi}" for lo, hi in zip(frame["t_low"], frame["t_high"])]


def _pooled_intervals(stats):
    """Per interval of t: means over seeds, and the accuracy's Wilson interval with each pair counted
    once: every seed analyses the same validation pairs with the same noise and timesteps, so
    pooling S seeds' pairs would count each pair S times. The interval is over the interval's
    pairs (one seed's n), at the seeds' mean accuracy; the n column is that one seed's n."""
    import pandas as pd

    rows = []
    for (bin_, t_low, t_high), group in stats.groupby(["bin", "t_low", "t_high"], sort=True):
        trials = max(1, int(round(group["n"].mean())))
        accuracy = float(group["accuracy"].mean())
        correct = accuracy * trials
        low, high = binomial_interval(min(correct, trials), trials)
        sigmas = {c: group[c].iloc[0] for c in ("sigma_low", "sigma_high") if c in group}
        rows.append(
            {
                "bin": bin_,
                "t_low": t_low,
                "t_high": t_high,
                "n": trials,
                **sigmas,
                **{c: float(group[c].mean()) for c in ("loss", "reward_scale", "lambda_t", "divergence")},
                "accuracy": accuracy,
                "accuracy_low": low,
                "accuracy_high": high,
            }
        )
    return pd.DataFrame(rows)


@reads.holding
def plot_tau(
    db,
    groups: dict[str, list[str]],
    *,
    baseline: str | None = "diff-dpo",
    metric: str = "human",
    prompt_set: str = "toy-test",
    out=None,
):
    """Fig. 4: mean score against tau, one line per group of runs (e.g. with / without regularisation)."""
    figure, axis = plt.subplots(figsize=(6, 4.5))
    plotted = False
    all_taus: set[int] = set()
    for number, (label, runs) in enumerate(groups.items()):
        points = []
        for family, members in seeds.families(db, runs).items():
            try:
                estimate = seeds.score_estimate(db, family, metric=metric, prompt_set=prompt_set)
            except LookupError:
                continue
            tau = reads.run_settings(db, members[:1])["tau"]
            points.append((int(tau.iloc[0]), estimate))
        if not points:
            continue
        points.sort(key=lambda p: p[0])
        taus = [p[0] for p in points]
        means = np.array([p[1].effect for p in points])
        errors = np.array([[p[1].effect - p[1].ci_low for p in points], [p[1].ci_high - p[1].effect for p in points]])
        shift = 1 + 0.03 * (number - (len(groups) - 1) / 2)  # side by side, so the error bars do not hide each other
        axis.errorbar(
            [t * shift for t in taus],
            means,
            yerr=errors,
            marker="o",
            capsize=3,
            label=f"{label} ({points[0][1].seeds} seeds)",
        )
        all_taus.update(taus)
        plotted = True
    if not plotted:
        raise ValueError("nothing to plot: none of the tau runs has scores")
    if baseline:
        try:
            base = seeds.score_estimate(db, baseline, metric=metric, prompt_set=prompt_set)
            axis.axhline(base.effect, color="gray", linestyle="--", label=f"{baseline} (mean over seeds)")
            axis.axhspan(base.ci_low, base.ci_high, color="gray", alpha=0.15, linewidth=0)
        except LookupError:
            pass
    axis.set(
        xlabel="reference update period tau (steps)",
        ylabel=f"mean {metric} score on {prompt_set}",
        title="sensitivity to tau (95% interval: seeds crossed with prompts)",
    )
    axis.set_xscale("log", base=2)
    axis.set_xticks(sorted(all_taus), [str(t) for t in sorted(all_taus)])
    axis.minorticks_off()
    axis.legend(fontsize=8)
    return _save(figure, out)


@reads.holding
def relative_divergence(db, runs: dict[str, str], relative_to: str, analysis: str = "reference"):
    """Per interval, each run's divergence as a percentage of ``relative_to``'s (Fig. 5's 100%)."""
    stats = reads.timestep_stats(db, [relative_to, *runs.values()], analysis)
    _require(stats, "timestep_stats")
    base = stats[stats["run"] == relative_to].set_index("bin")["divergence"]
    rows = []
    for label, run in runs.items():
        for row in stats[stats["run"] == run].itertuples(index=False):
            if row.bin in base.index and base[row.bin] != 0:
                rows.append(
                    {
                        "label": label,
                        "run": run,
                        "bin": row.bin,
                        "t_low": row.t_low,
                        "t_high": row.t_high,
                        "percent": 100.0 * row.divergence / base[row.bin],
                    }
                )
    import pandas as pd

    return pd.DataFrame(rows)


@reads.holding
def divergence_by_timestep(db, runs: dict[str, str], *, relative_to: str, analysis: str = "reference"):
    """Fig. 5's numbers, over training seeds: per label and interval, the divergence as a percentage
    of ``relative_to``'s, each seed's run against the same seed's ``relative_to`` run (``runs`` and
    ``relative_to`` are families), then the mean over seeds (``seeds``: how many)."""
    parts = []
    base_runs = seeds.family_runs(db, relative_to)
    for k, base_run in base_runs.items():
        mine = {label: seeds.family_runs(db, family).get(k) for label, family in runs.items()}
        mine = {label: run for label, run in mine.items() if run}
        if mine:
            try:
                parts.append(relative_divergence(db, mine, base_run, analysis))
            except ValueError:
                continue
    import pandas as pd

    table = pd.concat(parts) if parts else pd.DataFrame()
    _require(table, f"intervals shared with {relative_to}")
    return table.groupby(["label", "bin", "t_low", "t_high"], as_index=False, sort=False).agg(
        percent=("percent", "mean"), seeds=("run", "nunique")
    )


@reads.holding
def plot_divergence_by_timestep(db, runs: dict[str, str], *, relative_to: str, analysis: str = "reference", out=None):
    """Fig. 5: divergence from init per interval, as % of the reference-update-only run's (mean over seeds)."""
    table = divergence_by_timestep(db, runs, relative_to=relative_to, analysis=analysis)
    figure, axis = plt.subplots(figsize=(7, 4))
    labels = list(dict.fromkeys(table["label"]))
    width = 0.8 / max(1, len(labels))
    for offset, label in enumerate(labels):
        group = table[table["label"] == label]
        axis.bar(group["bin"] + offset * width, group["percent"], width=width, label=label)
    ticks = table.drop_duplicates("bin").sort_values("bin")
    axis.set_xticks(
        ticks["bin"] + width * (len(labels) - 1) / 2,
        [f"{lo}-{hi}" for lo, hi in zip(ticks["t_low"], ticks["t_high"])],
        rotation=60,
        fontsize=7,
    )
    axis.axhline(100, color="gray", linestyle="--", linewidth=1, label=f"{relative_to} = 100%")
    axis.set(
        xlabel="t interval (start of generation on the left)",
        ylabel="D(policy, init), % of reference",
        title="divergence per timestep interval",
    )
    axis.legend(fontsize=8)
    return _save(figure, out)


def sample_image_file(image_path: str, run: str, prompt_set: str) -> Path | None:
    """A stored sample's PNG: its recorded path, else the copy `refbench reproduce` keeps under
    results/samples/RUN/SET/, or results/toy-flow/samples/RUN/SET/ for the flow world's (made under
    runs/reproduce-flow/), results/early-regime/samples/RUN/SET/ for the early regime's
    ($REFBENCH_RESULTS or ./results, then the repository's results/)."""
    import os

    recorded = Path(image_path)
    if recorded.is_file():
        return recorded
    roots = [Path(os.environ.get("REFBENCH_RESULTS", "results")), Path(__file__).resolve().parents[1] / "results"]
    # Both worlds name their runs alike: the flow world's (made under runs/reproduce-flow/) are
    # copied to results/toy-flow/samples/, and must not be taken for the UNet world's.
    world = {"reproduce-flow": "toy-flow", "reproduce-early": "early-regime"}.get(
        next((part for part in recorded.parts if part in ("reproduce-flow", "reproduce-early")), ""), ""
    )
    for root in roots:
        copy = root / world / "samples" / run / prompt_set / recorded.name
        if copy.is_file():
            return copy
    return None


@reads.holding
def plot_samples(db, runs: list[str], *, prompt_set: str = "toy-test", num: int = 6, training_seed: int = 0, out=None):
    """Fig. 3: the same prompt and evaluation seed under every run, side by side: one row per
    (prompt, seed), one column per run (``training_seed``'s run of each family). Rows are spread
    evenly over the (prompt, seed) pairs every run has."""
    from PIL import Image

    if num < 1:
        raise ValueError("--num must be >= 1")
    chosen = {}
    for name in runs:
        members = seeds.family_runs(db, name)
        if training_seed not in members:
            raise ValueError(f"nothing to plot: no run of {name!r} with training seed {training_seed} in the store")
        chosen[name] = members[training_seed]
    store = reads.open_store(db)
    frames = {
        name: store.query(
            "SELECT prompt, seed, image_path FROM samples WHERE run = ? AND prompt_set = ?", [run, prompt_set]
        ).set_index(["prompt", "seed"])
        for name, run in chosen.items()
    }
    shared = sorted(set.intersection(*(set(frame.index) for frame in frames.values())))
    if not shared:
        raise ValueError(f"nothing to plot: no (prompt, seed) on {prompt_set} that every run has samples for")
    picks = [shared[i] for i in np.unique(np.linspace(0, len(shared) - 1, min(num, len(shared))).round().astype(int))]
    figure, axes = plt.subplots(
        len(picks), len(chosen), figsize=(1.6 * len(chosen) + 2.2, 1.6 * len(picks)), squeeze=False
    )
    for row, key in enumerate(picks):
        for column, (name, run) in enumerate(chosen.items()):
            axis = axes[row, column]
            path = sample_image_file(frames[name].loc[key, "image_path"], run, prompt_set)
            if path is None:
                raise ValueError(
                    f"sample image of {run} for {key[0]!r} (seed {key[1]}) is missing: "
                    f"{frames[name].loc[key, 'image_path']}"
                )
            with Image.open(path) as image:
                axis.imshow(np.asarray(image.convert("RGB")), interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(name, fontsize=9)
            if column == 0:
                axis.set_ylabel(f"{key[0]}\n(seed {key[1]})", fontsize=7, rotation=0, ha="right", va="center")
    figure.suptitle(f"same prompt and seed under every run (training seed {training_seed})", fontsize=9)
    return _save(figure, out)
