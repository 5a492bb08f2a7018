"""results/: the toy reproduction's tables, figures, data export and README, written from the store."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from pathlib import Path

from refbench.experiments import reproduce_plan as plan

from . import figures, reads, seeds, tables
from .claims import UNTESTABLE, VERDICTS, claims_table, store_regime, verdict_counts

__all__ = ["write_report", "FIGURES", "timestep_markdown"]

# file name -> (description, drawing function taking (db, out))
FIGURES = {
    "fig1b_kl.png": (
        "Fig. 1(b): reward margin and divergence from the initial model",
        lambda db, out: figures.plot_kl(db, plan.FIG1B, out=out),
    ),
    "fig1c_divergence_vs_score.png": (
        "Fig. 1(c): final divergence against mean human score, every run",
        lambda db, out: figures.plot_divergence_vs_score(db, plan.plan_names(store_regime(db)), out=out),
    ),
    "fig2_timestep.png": (
        "Fig. 2: loss, |r_t|, accuracy and lambda(t) per timestep interval",
        lambda db, out: figures.plot_timestep(db, plan.TIMESTEP_RUNS, out=out),
    ),
    "fig3_samples.png": (
        "Fig. 3: the same prompt and seed under each method (training seed 0)",
        lambda db, out: figures.plot_samples(db, plan.FIG3, out=out),
    ),
    "fig4_tau.png": (
        "Fig. 4: mean human score against tau, with and without regularisation",
        lambda db, out: _plot_tau(db, plan.fig4(store_regime(db)), out),
    ),
    "fig5_divergence_by_timestep.png": (
        "Fig. 5: divergence per interval relative to exploration only",
        lambda db, out: figures.plot_divergence_by_timestep(
            db, plan.FIG5["runs"], relative_to=plan.FIG5["relative_to"], out=out
        ),
    ),
}


def _plot_tau(db, sweep: dict, out):
    return figures.plot_tau(
        db, {k: v for k, v in sweep.items() if k != "baseline"}, baseline=sweep["baseline"], out=out
    )


def timestep_markdown(db, runs: list[str] | None = None) -> str:
    """Fig. 2's numbers (results/timestep_analysis.md): per family and interval, means over training
    seeds, the accuracy with its 95% Wilson interval (each pair once)."""
    index = seeds.families(db, runs or plan.TIMESTEP_RUNS)
    stats = reads.timestep_stats(db, [run for members in index.values() for run in members])
    if stats.empty:
        return "(no timestep analysis in the store)"
    family_of = {run: family for family, members in index.items() for run in members}
    stats = stats.assign(run=stats["run"].map(family_of))
    pooled = [figures._pooled_intervals(group).assign(run=family) for family, group in stats.groupby("run", sort=False)]
    import pandas as pd

    stats = pd.concat(pooled)
    stats["accuracy"] = [
        f"{a:.3f} [{lo:.3f}, {hi:.3f}]"
        for a, lo, hi in zip(stats["accuracy"], stats["accuracy_low"], stats["accuracy_high"])
    ]
    stats = stats.assign(interval=figures.interval_labels(stats))
    columns = ["run", "interval", "n", "loss", "reward_scale", "accuracy", "lambda_t", "divergence"]
    frame = stats[columns].copy()
    for column in ("loss", "reward_scale", "divergence"):
        frame[column] = frame[column].map(lambda v: f"{v:.3e}")
    frame["lambda_t"] = frame["lambda_t"].map(lambda v: f"{v:.3f}")
    return tables.to_markdown(frame)


@reads.holding
def write_report(
    db,
    results: Path,
    *,
    seconds: float | None = None,
    failed: dict | None = None,
    world: str = "toy",
    reanalysed: bool = False,
    untestable=(),
) -> list[Path]:
    """Write every table, figure and the README into ``results``; returns the files written.
    ``world="toy-flow"``: the flow world's subset (``reproduce_plan.FLOW_RUNS``), its README, and
    its verdicts beside the UNet world's in the README one folder up (``flow_report``). ``reanalysed``:
    written by `refbench report` from runs made earlier (the README says so)."""
    import matplotlib.pyplot as plt

    from . import flow_report

    flow = world == "toy-flow"
    names = [s.name for s in plan.world_runs(world)] if flow else plan.plan_names(store_regime(db))
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    sections = {"table1.md": tables.winrate_table(db, plan.TABLE1_RUN, plan.table1_rows(world))}
    if not flow:
        sections.update(
            {"table3.md": tables.raw_score_table(db, plan.TABLE3), "table4.md": tables.raw_score_table(db, plan.TABLE4)}
        )
    # The paper regime's tuning runs (tune-*) are part of its cost: listed after the plan's runs.
    tuning = reads.open_store(db).query("SELECT name FROM runs WHERE name LIKE 'tune-%' ORDER BY name")["name"].tolist()
    sections["costs.md"] = tables.cost_table(db, names + ([] if flow else tuning))
    markdown = {}
    for name, frame in sections.items():
        markdown[name] = tables.to_markdown(frame) if not frame.empty else "(no data)"
        (results / name).write_text(markdown[name] + "\n")
        written.append(results / name)
    markdown["timestep"] = timestep_markdown(db, [r for r in plan.TIMESTEP_RUNS if r in names])
    (results / "timestep_analysis.md").write_text(markdown["timestep"] + "\n")
    written.append(results / "timestep_analysis.md")
    fig3 = [r for r in plan.FIG3 if r == "base" or r in names]
    written += _copy_fig3_samples(db, results, fig3)
    drawn = {}
    for name, (description, draw) in (flow_report.figures_for(fig3) if flow else FIGURES).items():
        try:
            plt.close(draw(db, results / name))
            drawn[name] = description
            written.append(results / name)
        except ValueError as exc:  # a figure whose runs are missing is reported, not fatal
            drawn[name] = f"{description} -- not drawn: {exc}"
    if not reanalysed:  # a re-analysis reads that export (or the store it came from): the data did not change
        written += reads.open_store(db).export_parquet(results / "data")
    claims = claims_table(db, untestable=untestable)
    if flow:  # the claims whose runs the flow plan trains
        claims = claims[claims["where"].isin(plan.FLOW_CLAIMS) & (claims["verdict"] != "not measured")].reset_index(
            drop=True
        )
    paper = not flow and store_regime(db) == "paper"
    if paper:  # each claim's verdict in the early regime beside this one's
        claims = claims.merge(
            _early_verdicts(results / "early-regime" / "claims.csv"), on=["where", "paper"], how="left"
        )
    claims.drop(columns=["cost"]).to_csv(results / "claims.csv", index=False)  # read by flow_report's comparison
    written.append(results / "claims.csv")
    shown = claims.assign(seeds=[f"{s} x {n}" if s else "" for s, n in zip(claims["seeds"], claims["samples"])])
    shown = shown.assign(mde=[_mde_text(m, w, k) for m, w, k in zip(shown["mde"], shown["measured"], shown["scale"])])
    claims_md = tables.to_markdown(
        shown[["where", "paper", "measured", "seeds", "verdict", "verdict_unadjusted", "mde", "cost"]].rename(
            columns={
                "paper": "the paper says",
                "measured": "effect (paper's direction positive) [95% interval]",
                "seeds": "seeds x samples",
                "verdict": "verdict (Holm)",
                "verdict_unadjusted": "unadjusted",
                "mde": "detectable effect",
                "cost": "cost (fwd+bwd image-passes per step, training s)",
            }
        )
    )
    index = seeds.families(db, names)
    settings = reads.run_settings(db, [run for members in index.values() for run in members])
    span = _span(db, settings["run"].tolist())
    command = ("refbench report" if reanalysed else "refbench reproduce") + (" --world toy-flow" if flow else "")
    fields = readme_fields(claims, drawn, settings, seconds, failed or {}, command)
    fields["setup"] = (PAPER_SETUP if paper else EARLY_SETUP).format(seeds=fields["training_seeds"])
    if paper:
        fields["regimes"] = regime_comparison(claims)
    if reanalysed:
        fields["timing"] = "tables, figures and verdicts recomputed from the stored runs of `refbench reproduce`"
    if flow:
        fields["lambda_note"] = flow_report.lambda_note(db, [run for members in index.values() for run in members])
        readme = flow_report.flow_readme(markdown, claims, claims_md, fields, span)
        written += flow_report.update_comparison(results.parent / "early-regime", results)
    else:
        readme = _readme(markdown, claims, claims_md, fields, span)
        if store_regime(db) == "early":  # the flow world has the early regime's settings
            readme += flow_report.comparison_section(results, results.parent / "toy-flow")
    (results / "README.md").write_text(readme)
    written.append(results / "README.md")
    return written


EARLY_SETUP = """the runs are the early regime's: the toy preset (300 steps of fresh pairs, batch 8, beta 5000, lr
1e-5, tau 8, delta 2e-3, gamma 0.9 over 50 bins), each trained under {seeds} training seeds (run
`NAME-seedK`), and every run is evaluated on the same 42 toy-test prompts x 2 evaluation seeds.
tau is scaled from the paper's {{16, 32, 64}} to {{4, 8, 16}}."""
PAPER_SETUP = """the runs are in the paper's regime (the project's `docs/regime.md`): Diffusion-DPO's learning rate
and length chosen on validation prompts (`regime/curve.md`), every method's main knob tuned alike
(`tuning.md`), 426 pairs reused for several epochs, each run trained under up to {seeds} training
seeds (run `NAME-seedK`; Fig. 4's sweep-only runs under 3) and evaluated on the same 42 toy-test
prompts x 1 evaluation seed. Claims that need over-optimisation are "untestable in this world"
when Diffusion-DPO's curve did not show it."""


def _early_verdicts(path: Path):
    import pandas as pd

    if not path.is_file():
        return pd.DataFrame(columns=["where", "paper", "verdict_early_regime"])
    early = pd.read_csv(path)
    return early[["where", "paper", "verdict"]].rename(columns={"verdict": "verdict_early_regime"})


def regime_comparison(claims) -> str:
    """A section with each claim's verdict in this (paper) regime and in the early one (the claims'
    ``verdict_early_regime``), when the early regime's claims are known."""
    if "verdict_early_regime" not in claims or claims["verdict_early_regime"].isna().all():
        return ""
    both = claims[["where", "paper", "verdict", "verdict_early_regime"]].fillna({"verdict_early_regime": "not run"})
    changed = int((both["verdict"] != both["verdict_early_regime"]).sum())
    table = both.rename(
        columns={
            "paper": "the paper says",
            "verdict": "paper regime (Holm)",
            "verdict_early_regime": "early regime (Holm)",
        }
    )
    return f"""
## Verdicts in both regimes

The same claims, judged by the same code, in this regime and in the early one
(`early-regime/README.md`: 300 steps of fresh pairs at the toy preset's settings, 3 seeds).
{changed} of {len(both)} verdicts differ between the regimes: a verdict that depends on the regime
is itself a finding.

{tables.to_markdown(table)}
"""


def _mde_text(mde, measured: str, scale: float = 1.0) -> str:
    """The minimum detectable effect in the unit the effect is shown in (win rates in points)."""
    if mde is None or mde != mde:
        return ""
    return f"{100 * mde:.1f} pts" if "win rate" in measured else f"{mde * scale:.2g}"


def _copy_fig3_samples(db, results: Path, runs: list[str]) -> list[Path]:
    """Fig. 3's images (training seed 0 of its runs) under results/samples/RUN/SET/, so that the figure
    and its notebook can be redrawn from a clone, where runs/ is not committed (16 px PNGs: tiny)."""
    import shutil

    written = []
    store = reads.open_store(db)
    for family in runs:
        run = seeds.family_runs(db, family).get(0)
        if run is None:
            continue
        frame = store.query("SELECT prompt_set, image_path FROM samples WHERE run = ?", [run])
        for prompt_set, image_path in frame.itertuples(index=False):
            source = Path(image_path)
            if not source.is_file():
                continue
            target = results / "samples" / run / prompt_set / source.name
            if not target.is_file() or target.read_bytes() != source.read_bytes():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
            written.append(target)
    return written


def _span(db, runs: list[str]) -> str:
    """The wall time of the reproduction, from the store's timestamps: the first run's creation to the
    last sample's (the runs and base's samples), whichever invocations did the work."""
    if not runs:
        return ""
    marks = ", ".join("?" for _ in runs)
    frame = reads.open_store(db).query(
        f"SELECT (SELECT min(created_at) FROM runs WHERE name IN ({marks})) AS first, "
        f"greatest((SELECT max(updated_at) FROM runs WHERE name IN ({marks})), (SELECT max(created_at) FROM samples)) AS last",
        [*runs, *runs],
    )
    first, last = frame["first"][0], frame["last"][0]
    if first is None or last is None or first != first or last != last:
        return ""
    minutes = (last - first).total_seconds() / 60
    return (
        f" The {len(runs)} runs were trained, sampled and scored between {first:%Y-%m-%d %H:%M} and "
        f"{last:%H:%M} UTC: {minutes:.1f} minutes of wall time, from the store's timestamps."
    )


def readme_fields(claims, drawn, settings, seconds, failed, command: str = "refbench reproduce") -> dict[str, str]:
    """What both worlds' READMEs say around their tables: the verdict summary, training seeds, time
    stamp and timing, the figure list, failed runs and the runs' settings."""
    counts = verdict_counts(claims)
    return {
        "summary": ", ".join(
            f"{counts[name]} {name}" for name in VERDICTS if counts[name] or name not in ("not measured", UNTESTABLE)
        ),
        "training_seeds": str(int(claims["seeds"].max()) if not claims.empty else 0),
        "stamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "timing": f"{seconds / 60:.1f} minutes for the last `{command}` invocation" if seconds else "time not recorded",
        "figure_lines": "\n".join(f"- `{name}`: {text}" for name, text in drawn.items()),
        "failures": "\n".join(f"- {name}: {outcome}" for name, outcome in failed.items()) or "none",
        "settings_md": tables.to_markdown(settings) if not settings.empty else "(no runs)",
        "machine": platform.machine(),
        "command": command,
    }


def _readme(markdown, claims, claims_md, fields: dict[str, str], span="") -> str:
    summary, stamp, timing = fields["summary"], fields["stamp"], fields["timing"]
    figure_lines, failures, settings_md = fields["figure_lines"], fields["failures"], fields["settings_md"]
    return f"""# Toy-world reproduction of the paper's tables and figures

Written by `{fields["command"]}` on {stamp} ({fields["machine"]}, {timing}).{span}
Every number below is read from the store exported in `data/` (parquet, one file per table;
load it with `refbench.store.Store(path).import_parquet("results/data")`).
The toy world is a 16 px text-to-image world with oracle rewards (the project's `docs/toy-world.md`);
{fields["setup"]}

## The paper's claims, one by one

**{summary}** (of {len(claims)} claims, after Holm's adjustment). Each claim is one effect,
signed so that the paper's claim is positive, with a 95% interval whose coverage was measured by
simulation (`benchmarks/coverage.md`). Score effects and win rates (samples paired by prompt and
evaluation seed inside each training seed; every seed on the same prompts) cross training seeds
with prompts: the seed means' variance with Student's t over the seeds, the shared prompts'
with t over the prompts. Effects measured once per training run (a divergence, a margin:
"seeds x samples" a x 1) use Student's t over the seeds. Every comparison of every claim is one
test, and Holm's step-down adjustment runs over the whole family: "verdict (Holm)" holds (is
contradicted) when the adjusted p-value is at most 0.05 and the effect is above (below) no
effect (0, or 50% for a win rate); "unadjusted" reads the 95% intervals alone. A claim of
several comparisons holds when all hold and is contradicted when any does. A claim of no effect
(timestep-only) is an equivalence test against the margin the plan fixed before the runs it
governs (two one-sided tests; contradicted when the interval lies outside it). "detectable effect":
the smallest effect the shown comparison would detect with 80% power at two-sided 5%, so an
inconclusive claim whose effect is far below it had no power, not no effect. Score effects use
the hidden `human` oracle (the toy's PickScore) (`analysis.claims`, `refbench/method/inference.py`).

{claims_md}
{fields.get("regimes", "")}
## What each method costs (means over training seeds)

Image-passes per optimizer step (one image through one model; batch 8 pairs = 16 images),
training forward and backward apart from the divergence monitor's forwards, and wall seconds
of training. Seconds were measured with two runs sharing the 2 cores; passes are exact.

{markdown["costs.md"]}

## Table 1: win rates of refdpo (%, 95% interval, training seeds crossed with the shared prompts (Student t), ties count half)

{markdown["table1.md"]}

## Table 3: alternative exploration strategies (mean oracle scores over seeds [95% interval, seeds crossed with prompts]; best mean in bold)

{markdown["table3.md"]}

## Table 4: timestep-aware training (mean oracle scores over seeds [95% interval, seeds crossed with prompts]; best mean in bold)

{markdown["table4.md"]}

## Fig. 2: timestep analysis (against each run's reference; means over seeds, accuracy with its 95% Wilson interval over the interval's pairs, each counted once; interval 0-99 is the clean end)

{markdown["timestep"]}

## Figures

{figure_lines}

## Runs

{settings_md}

Failed runs: {failures}
"""
