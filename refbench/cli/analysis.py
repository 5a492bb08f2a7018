"""The analysis command: plot draws a figure of the paper or prints a table, from the store."""

from __future__ import annotations

from pathlib import Path

import typer

from ..defaults import DEFAULT_DB
from ..errors import RefbenchError
from .common import DB_HELP, parse_list

PLOT_KINDS = (
    "kl",
    "divergence-vs-score",
    "timestep",
    "samples",
    "tau",
    "divergence-by-timestep",
    "table1",
    "table3",
    "table4",
)


def plot(
    figure: str = typer.Argument(
        ..., help="kl, divergence-vs-score, timestep, samples, tau, divergence-by-timestep, table1, table3, table4."
    ),
    runs: str | None = typer.Option(
        None,
        "--runs",
        help="Comma-separated runs or families (refdpo = refdpo-seed0, "
        "-seed1, ... when those exist; default: the reproduction's). table1: the run "
        "first, then its baselines (refdpo,diff-dpo,sft); divergence-by-timestep: the "
        "run the others are relative to, first.",
    ),
    prompts: str = typer.Option("toy-test", "--prompts", help="samples: the prompt set of the stored samples."),
    num: int = typer.Option(6, "--num", help="samples: rows, one per (prompt, seed)."),
    training_seed: int = typer.Option(0, "--training-seed", help="samples: which training seed's run of each family."),
    metric: str = typer.Option("human", "--metric", help="Score metric for score plots."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="PNG to write (default: figures/FIGURE.png beside the store; runs/figures/ for the reproduction's).",
    ),
    db: Path | None = typer.Option(
        None,
        "--db",
        help=DB_HELP + f" Default: {DEFAULT_DB} with --runs; "
        "without, the reproduction's (results/reproduce.duckdb or results/data/).",
    ),
) -> None:
    """Draw a figure of the paper (PNG) or print a table (markdown), from the store."""
    from analysis import figures, load_results, tables

    from ..defaults import figure_folder
    from ..experiments import reproduce_plan as plan
    from ..store import Store

    if figure not in PLOT_KINDS:
        raise RefbenchError(f"unknown plot {figure!r}; valid: {', '.join(PLOT_KINDS)}")
    chosen = parse_list(runs)
    if figure == "table1" and len(chosen) == 1:
        raise RefbenchError("plot table1 --runs takes the run first, then at least one baseline: e.g. refdpo,diff-dpo")
    if db is None and not chosen:  # the plan's runs live in the reproduction's store
        try:
            db = load_results()
        except FileNotFoundError as exc:
            raise RefbenchError(str(exc)) from None
        figures_at = figure_folder(None)
    else:
        db = Store(db or DEFAULT_DB, create=False)  # a mistyped --db is one line, not a new empty store
        figures_at = figure_folder(db.path)
    if figure.startswith("table"):
        rows = {"table1": plan.TABLE1, "table3": plan.TABLE3, "table4": plan.TABLE4}[figure]
        if chosen:
            rows = [(f"vs. {r}", r) for r in chosen[1:]] if figure == "table1" else [(r, r) for r in chosen]
        run = chosen[0] if chosen and figure == "table1" else plan.TABLE1_RUN
        frame = tables.winrate_table(db, run, rows) if figure == "table1" else tables.raw_score_table(db, rows)
        if frame.empty:
            raise RefbenchError(f"no data for {figure} in {db}; run `refbench reproduce` or train and score the runs")
        typer.echo(tables.to_markdown(frame))
        return
    out = out or figures_at / f"{figure}.png"
    try:
        if figure == "kl":
            figures.plot_kl(db, chosen or plan.FIG1B, out=out)
        elif figure == "divergence-vs-score":
            figures.plot_divergence_vs_score(db, chosen or [s.name for s in plan.PLAN], metric=metric, out=out)
        elif figure == "samples":
            figures.plot_samples(
                db, chosen or plan.FIG3, prompt_set=prompts, num=num, training_seed=training_seed, out=out
            )
        elif figure == "timestep":
            figures.plot_timestep(db, chosen or plan.TIMESTEP_RUNS, out=out)
        elif figure == "tau":
            groups = {"runs": chosen} if chosen else {k: v for k, v in plan.FIG4.items() if k != "baseline"}
            figures.plot_tau(db, groups, baseline=plan.FIG4["baseline"], metric=metric, out=out)
        else:
            runs_map = {r: r for r in chosen[1:]} if chosen else plan.FIG5["runs"]
            figures.plot_divergence_by_timestep(
                db, runs_map, relative_to=chosen[0] if chosen else plan.FIG5["relative_to"], out=out
            )
    except ValueError as exc:
        raise RefbenchError(str(exc)) from None
    typer.echo(f"figure: {out}")
