"""results/: the toy reproduction's tables, figures, data export and README, written from the store."""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from pathlib import Path

from refbench.experiments import reproduce_plan as plan

from . import figures, reads, tables
from .claims import claims_table

__all__ = ["write_report", "FIGURES"]

# file name -> (description, drawing function taking (db, out))
FIGURES = {
    "fig1b_kl.png": ("Fig. 1(b): reward margin and divergence from the initial model",
                     lambda db, out: figures.plot_kl(db, plan.FIG1B, out=out)),
    "fig1c_divergence_vs_score.png": ("Fig. 1(c): final divergence against mean human score, every run",
                                      lambda db, out: figures.plot_divergence_vs_score(db, [s.name for s in plan.PLAN], out=out)),
    "fig2_timestep.png": ("Fig. 2: loss, |r_t|, accuracy and lambda(t) per timestep interval",
                          lambda db, out: figures.plot_timestep(db, plan.TIMESTEP_RUNS, out=out)),
    "fig4_tau.png": ("Fig. 4: mean human score against tau, with and without regularisation",
                     lambda db, out: figures.plot_tau(db, {k: v for k, v in plan.FIG4.items() if k != "baseline"},
                                                      baseline=plan.FIG4["baseline"], out=out)),
    "fig5_divergence_by_timestep.png": ("Fig. 5: divergence per interval relative to exploration only",
                                        lambda db, out: figures.plot_divergence_by_timestep(
                                            db, plan.FIG5["runs"], relative_to=plan.FIG5["relative_to"], out=out)),
}


def _timestep_markdown(db) -> str:
    stats = reads.timestep_stats(db, plan.TIMESTEP_RUNS)
    if stats.empty:
        return "(no timestep analysis in the store)"
    stats = stats.assign(interval=[f"{lo}-{hi}" for lo, hi in zip(stats["t_low"], stats["t_high"])])
    columns = ["run", "interval", "n", "loss", "reward_scale", "accuracy", "lambda_t", "divergence"]
    frame = stats[columns].copy()
    for column in ("loss", "reward_scale", "divergence"):
        frame[column] = frame[column].map(lambda v: f"{v:.3e}")
    for column in ("accuracy", "lambda_t"):
        frame[column] = frame[column].map(lambda v: f"{v:.3f}")
    return tables.to_markdown(frame)


def write_report(db, results: Path, *, seconds: float | None = None, failed: dict | None = None) -> list[Path]:
    """Write every table, figure and the README into ``results``; returns the files written."""
    import matplotlib.pyplot as plt

    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    sections = {
        "table1.md": tables.winrate_table(db, plan.TABLE1_RUN, plan.TABLE1),
        "table3.md": tables.raw_score_table(db, plan.TABLE3),
        "table4.md": tables.raw_score_table(db, plan.TABLE4),
    }
    markdown = {}
    for name, frame in sections.items():
        markdown[name] = tables.to_markdown(frame) if not frame.empty else "(no data)"
        (results / name).write_text(markdown[name] + "\n")
        written.append(results / name)
    markdown["timestep"] = _timestep_markdown(db)
    (results / "timestep_analysis.md").write_text(markdown["timestep"] + "\n")
    written.append(results / "timestep_analysis.md")
    drawn = {}
    for name, (description, draw) in FIGURES.items():
        try:
            plt.close(draw(db, results / name))
            drawn[name] = description
            written.append(results / name)
        except ValueError as exc:  # a figure whose runs are missing is reported, not fatal
            drawn[name] = f"{description} -- not drawn: {exc}"
    written += reads.open_store(db).export_parquet(results / "data")
    claims = claims_table(db)
    claims_md = tables.to_markdown(claims.rename(columns={"where": "where", "paper": "the paper says",
                                                          "measured": "toy world, measured", "verdict": "verdict"}))
    settings = reads.run_settings(db, [s.name for s in plan.PLAN])
    readme = _readme(markdown, claims, claims_md, drawn, settings, seconds, failed or {})
    (results / "README.md").write_text(readme)
    written.append(results / "README.md")
    return written


def _readme(markdown, claims, claims_md, drawn, settings, seconds, failed) -> str:
    holds = int((claims["verdict"] == "holds").sum())
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    timing = f"{seconds / 60:.1f} minutes for the last `refbench reproduce` invocation" if seconds else "time not recorded"
    figure_lines = "\n".join(f"- `{name}`: {text}" for name, text in drawn.items())
    failures = "\n".join(f"- {name}: {outcome}" for name, outcome in failed.items()) or "none"
    settings_md = tables.to_markdown(settings) if not settings.empty else "(no runs)"
    return f"""# Toy-world reproduction of the paper's tables and figures

Written by `refbench reproduce` on {stamp} ({platform.machine()}, {timing}).
Every number below is read from the store exported in `data/` (parquet, one file per table;
load it with `refbench.store.Store(path).import_parquet("results/data")`).
The toy world is a 16 px text-to-image world with oracle rewards (README of the project);
the runs use the toy preset (300 steps, batch 8, beta 5000, lr 1e-5, tau 8, delta 2e-3,
gamma 0.9 over 50 bins), one training seed each, and 42 toy-test prompts x 2 seeds for
evaluation. tau is scaled from the paper's {{16, 32, 64}} to {{4, 8, 16}}.

## The paper's claims, one by one

{holds} of {len(claims)} claims hold at toy scale. Verdicts are computed from the numbers by
`analysis.claims`; score comparisons use the hidden `human` oracle (the toy's PickScore), and
a win counts when the 95% interval lies above 50%. One training seed per run: differences of
a few thousandths in mean score are within seed noise, so a "holds" on a small gap is weak
evidence and a "does not hold" on a small gap is not evidence against the paper.

{claims_md}

## Table 1: win rates of refdpo (%, 95% bootstrap interval, ties count half)

{markdown["table1.md"]}

## Table 3: alternative exploration strategies (mean oracle scores; best in bold)

{markdown["table3.md"]}

## Table 4: timestep-aware training (mean oracle scores; best in bold)

{markdown["table4.md"]}

## Fig. 2: timestep analysis (against each run's reference; interval 0-99 is the clean end)

{markdown["timestep"]}

## Figures

{figure_lines}

## Runs

{settings_md}

Failed runs: {failures}
"""
