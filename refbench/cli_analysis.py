"""The analysis commands of the CLI: timestep-analysis, sweep, plot, reproduce. They parse and call."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .errors import RefbenchError

PLOT_KINDS = ("kl", "divergence-vs-score", "timestep", "tau", "divergence-by-timestep", "table1", "table3", "table4")


def _list(text: Optional[str], kind=str) -> list:
    if not text:
        return []
    try:
        return [kind(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise RefbenchError(f"cannot read {text!r} as a comma-separated list of {kind.__name__}") from None


def register(app: typer.Typer) -> None:
    from .cli import DB_HELP  # registered from cli.py once it is defined

    @app.command("timestep-analysis")
    def timestep_analysis(
        run: str = typer.Argument(..., help="A trained run."),
        against: str = typer.Option("reference", "--against", help="'reference' (the run's final reference) or 'init'."),
        pairs: Optional[int] = typer.Option(None, "--pairs", help="Validation pairs (default: 256 toy, 5000 SD)."),
        intervals: int = typer.Option(10, "--intervals", help="Equal intervals of [0, T)."),
        batch: int = typer.Option(128, "--batch", help="(pair, interval) evaluations per forward pass."),
        seed: int = typer.Option(0, "--seed", help="Seed of the timesteps and noise."),
        data: Optional[str] = typer.Option(None, "--data", help="Validation pairs (parquet or hub id; default: the run's validation split)."),
        figure: Optional[Path] = typer.Option(None, "--figure", help="PNG to write (default results/figures/timestep_RUN.png)."),
        db: Path = typer.Option(Path("results/refbench.duckdb"), "--db", help=DB_HELP),
        fmt: str = typer.Option("table", "--format", help="table, csv, json or markdown."),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
    ) -> None:
        """Fig. 2: per timestep interval, the model's loss, the implicit reward scale |r_t| and its accuracy."""
        from analysis.figures import plot_timestep

        from .display import render_frame
        from .timestep_analysis import analyse_run

        frame = analyse_run(run, db=db, against=against, num_pairs=pairs, intervals=intervals, batch_pairs=batch,
                            seed=seed, data=data, progress=progress and fmt == "table")
        if not frame.empty and (frame["reward_scale"] == 0).all():
            typer.echo(f"note: {run}'s policy equals its reference (a sync at the last step), so r_t = 0 everywhere; "
                       f"--against init compares it with the initial model", err=True)
        shown = frame.drop(columns=["run", "analysis"])
        typer.echo(render_frame(shown, fmt, title=f"{run} against its {against}: interval 0 is the noisiest"))
        out = figure or Path("results/figures") / f"timestep_{run}.png"
        plot_timestep(db, [run], analysis=against, out=out)
        if fmt == "table":
            typer.echo(f"figure: {out}")

    @app.command()
    def sweep(
        methods: str = typer.Option("refdpo", "--methods", help="Comma-separated method presets."),
        tau: Optional[str] = typer.Option(None, "--tau", help="Comma-separated tau values."),
        gamma: Optional[str] = typer.Option(None, "--gamma", help="Comma-separated gamma values."),
        beta: Optional[str] = typer.Option(None, "--beta", help="Comma-separated beta values."),
        lr: Optional[str] = typer.Option(None, "--lr", help="Comma-separated learning rates."),
        seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated training seeds."),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", help="One step budget for every run."),
        preset: str = typer.Option("toy", "--preset", help="Model/data preset."),
        jobs: int = typer.Option(1, "--jobs", help="Runs trained at once (each its own process)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="List the runs and their status, train nothing."),
        db: Path = typer.Option(Path("results/refbench.duckdb"), "--db", help=DB_HELP),
        out: Path = typer.Option(Path("runs"), "--out", help="Root folder of run folders."),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
    ) -> None:
        """Train a grid (methods x tau x gamma x beta x lr x seeds); finished runs are skipped, others resumed."""
        from .store import Store
        from .sweep import grid_specs, run_specs, spec_status

        specs = grid_specs(_list(methods), preset=preset, max_steps=max_steps, tau=_list(tau, int),
                           gamma=_list(gamma, float), beta=_list(beta, float), lr=_list(lr, float), seed=_list(seeds, int))
        if dry_run:
            store = Store(db)
            for spec in specs:
                typer.echo(f"{spec.name}: {spec_status(spec, store)}  {spec.overrides}")
            return
        outcomes = run_specs(specs, db=db, out_root=out, jobs=jobs, progress=progress)
        for name, outcome in outcomes.items():
            typer.echo(f"{name}: {outcome}")
        if any(o.startswith("failed") for o in outcomes.values()):
            raise RefbenchError(f"some runs failed; their logs are in {out / '_sweep'}")

    @app.command()
    def plot(
        kind: str = typer.Argument(..., help="kl, divergence-vs-score, timestep, tau, divergence-by-timestep, table1, table3, table4."),
        runs: Optional[str] = typer.Option(None, "--runs", help="Comma-separated runs (default: the reproduction's)."),
        metric: str = typer.Option("human", "--metric", help="Score metric for score plots."),
        out: Optional[Path] = typer.Option(None, "--out", help="PNG to write (default results/figures/KIND.png)."),
        db: Optional[Path] = typer.Option(None, "--db", help=DB_HELP + " Default: results/refbench.duckdb with --runs; "
                                          "without, the reproduction's (results/reproduce.duckdb or results/data/)."),
    ) -> None:
        """Draw a figure of the paper (PNG) or print a table (markdown), from the store."""
        from analysis import figures, load_results, tables

        from . import reproduce_plan as plan

        if kind not in PLOT_KINDS:
            raise RefbenchError(f"unknown plot {kind!r}; valid: {', '.join(PLOT_KINDS)}")
        chosen = _list(runs)
        if db is None and not chosen:  # the plan's runs live in the reproduction's store
            try:
                db = load_results()
            except FileNotFoundError as exc:
                raise RefbenchError(str(exc)) from None
        elif db is None:
            db = Path("results/refbench.duckdb")
        if kind.startswith("table"):
            rows = [(r, r) for r in chosen] or {"table1": plan.TABLE1, "table3": plan.TABLE3, "table4": plan.TABLE4}[kind]
            frame = (tables.winrate_table(db, plan.TABLE1_RUN, rows) if kind == "table1"
                     else tables.raw_score_table(db, rows))
            if frame.empty:
                raise RefbenchError(f"no data for {kind} in {db}; run `refbench reproduce` or train and score the runs")
            typer.echo(tables.to_markdown(frame))
            return
        out = out or Path("results/figures") / f"{kind}.png"
        try:
            if kind == "kl":
                figures.plot_kl(db, chosen or plan.FIG1B, out=out)
            elif kind == "divergence-vs-score":
                figures.plot_divergence_vs_score(db, chosen or [s.name for s in plan.PLAN], metric=metric, out=out)
            elif kind == "timestep":
                figures.plot_timestep(db, chosen or plan.TIMESTEP_RUNS, out=out)
            elif kind == "tau":
                groups = {"runs": chosen} if chosen else {k: v for k, v in plan.FIG4.items() if k != "baseline"}
                figures.plot_tau(db, groups, baseline=plan.FIG4["baseline"], metric=metric, out=out)
            else:
                runs_map = {r: r for r in chosen[1:]} if chosen else plan.FIG5["runs"]
                figures.plot_divergence_by_timestep(db, runs_map, relative_to=chosen[0] if chosen else plan.FIG5["relative_to"],
                                                    out=out)
        except ValueError as exc:
            raise RefbenchError(str(exc)) from None
        typer.echo(f"figure: {out}")

    @app.command()
    def reproduce(
        results: Path = typer.Option(Path("results"), "--results", help="Folder for tables, figures, data and README."),
        db: Path = typer.Option(Path("results/reproduce.duckdb"), "--db", help=DB_HELP),
        out: Path = typer.Option(Path("runs/reproduce"), "--out", help="Root folder of the runs."),
        jobs: int = typer.Option(2, "--jobs", help="Runs trained at once."),
        seeds: int = typer.Option(2, "--seeds", help="Seeds per toy-test prompt for evaluation."),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Step budget (default: the toy preset's 300)."),
        only: Optional[str] = typer.Option(None, "--only", help="Comma-separated subset of the plan's runs."),
        num_prompts: Optional[int] = typer.Option(None, "--num-prompts", help="Only the first N toy-test prompts (quick checks)."),
        timestep_pairs: int = typer.Option(256, "--timestep-pairs", help="Validation pairs of each timestep analysis."),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
    ) -> None:
        """The toy world's full reproduction: every run of the paper's tables, evaluated and analysed, into results/."""
        from .reproduce import reproduce as run_reproduce

        summary = run_reproduce(results=results, db=db, out_root=out, jobs=jobs, seeds=seeds, max_steps=max_steps,
                                only=_list(only) or None, num_prompts=num_prompts,
                                timestep_pairs=timestep_pairs, progress=progress)
        typer.echo(f"results: {results}/README.md ({len(summary['written'])} files)")
        if summary["failed"]:
            raise RefbenchError(f"{len(summary['failed'])} runs failed: {', '.join(summary['failed'])}")
