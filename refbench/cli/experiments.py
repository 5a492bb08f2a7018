"""Commands that run experiments: timestep-analysis, sweep, reproduce, bench."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import RefbenchError
from .common import DB_HELP, DB_OPTION, OUT_OPTION, parse_list


def timestep_analysis(
    run: str = typer.Argument(..., help="A trained run."),
    against: str = typer.Option("reference", "--against", help="'reference' (the run's final reference) or 'init'."),
    pairs: int | None = typer.Option(None, "--pairs", help="Validation pairs (default: 256 toy, 5000 SD)."),
    intervals: int = typer.Option(
        10,
        "--intervals",
        help="Equal intervals of [0, T) (a flow model's: of its training grid of s, with their s shown).",
    ),
    batch: int = typer.Option(128, "--batch", help="(pair, interval) evaluations per forward pass."),
    seed: int = typer.Option(0, "--seed", help="Seed of the timesteps and noise."),
    data: str | None = typer.Option(
        None, "--data", help="Validation pairs (parquet or hub id; default: the run's validation split)."
    ),
    figure: Path | None = typer.Option(
        None, "--figure", help="PNG to write (default: figures/timestep_RUN.png beside the store)."
    ),
    db: Path = DB_OPTION,
    fmt: str = typer.Option("table", "--format", help="table, csv, json or markdown."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Fig. 2: per timestep interval, the model's loss, the implicit reward scale |r_t| and its accuracy."""
    from analysis.figures import plot_timestep

    from ..defaults import figure_folder
    from ..display import render_frame
    from ..experiments.timestep_analysis import analyse_run

    frame = analyse_run(
        run,
        db=db,
        against=against,
        num_pairs=pairs,
        intervals=intervals,
        batch_pairs=batch,
        seed=seed,
        data=data,
        progress=progress and fmt == "table",
    )
    if not frame.empty and (frame["reward_scale"] == 0).all():
        typer.echo(
            f"note: {run}'s policy equals its reference (a sync at the last step), so r_t = 0 everywhere; "
            f"--against init compares it with the initial model",
            err=True,
        )
    shown = frame.drop(columns=["run", "analysis"])
    shown = shown.drop(columns=[c for c in ("sigma_low", "sigma_high") if c in shown and shown[c].isna().all()])
    typer.echo(render_frame(shown, fmt, title=f"{run} against its {against}: interval 0 is the noisiest"))
    out = figure or figure_folder(db) / f"timestep_{run}.png"
    plot_timestep(db, [run], analysis=against, out=out)
    if fmt == "table":
        typer.echo(f"figure: {out}")


def sweep(
    methods: str = typer.Option("refdpo", "--methods", help="Comma-separated method presets."),
    tau: str | None = typer.Option(None, "--tau", help="Comma-separated tau values."),
    gamma: str | None = typer.Option(None, "--gamma", help="Comma-separated gamma values."),
    beta: str | None = typer.Option(None, "--beta", help="Comma-separated beta values."),
    lr: str | None = typer.Option(None, "--lr", help="Comma-separated learning rates."),
    seeds: str | None = typer.Option(None, "--seeds", help="Comma-separated training seeds."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="One step budget for every run."),
    preset: str = typer.Option("toy", "--preset", help="Model/data preset."),
    jobs: int = typer.Option(1, "--jobs", help="Runs trained at once (each in its own long-lived worker process)."),
    threads: int = typer.Option(
        1,
        "--threads",
        help="CPU threads of each run (a run's numbers depend on it, so it is fixed, not derived from --jobs).",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the runs and their status, train nothing."),
    config_file: Path | None = typer.Option(
        None, "--config", help="TOML or JSON file of settings every run shares (e.g. data.latent_cache)."
    ),
    db: Path = DB_OPTION,
    out: Path = OUT_OPTION,
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train a grid (methods x tau x gamma x beta x lr x seeds); finished runs are skipped, others resumed."""
    from ..config import read_config_file
    from ..experiments.sweep import grid_specs, run_specs, spec_status
    from ..store import Store

    shared = read_config_file(config_file) if config_file else {}
    extra = {section: dict(shared[section]) for section in ("model", "data", "training", "method") if section in shared}
    extra.get("method", {}).pop("name", None)  # --methods names the methods
    specs = grid_specs(
        parse_list(methods),
        preset=preset,
        max_steps=max_steps,
        extra=extra,
        tau=parse_list(tau, int),
        gamma=parse_list(gamma, float),
        beta=parse_list(beta, float),
        lr=parse_list(lr, float),
        seed=parse_list(seeds, int),
    )
    if dry_run:
        store = Store(db)
        for spec in specs:
            typer.echo(f"{spec.name}: {spec_status(spec, store)}  {spec.overrides}")
        return
    outcomes = run_specs(specs, db=db, out_root=out, jobs=jobs, threads=threads, progress=progress)
    for name, outcome in outcomes.items():
        typer.echo(f"{name}: {outcome}")
    if any(o.startswith("failed") for o in outcomes.values()):
        raise RefbenchError(f"some runs failed; their logs are in {out / '_sweep'}")


def reproduce(
    world: str = typer.Option(
        "toy", "--world", help="toy (the UNet toy world, every run) or toy-flow (the flow-matching toy world)."
    ),
    results: Path | None = typer.Option(
        None, "--results", help="Folder for tables, figures, data and README (default results/, or results/toy-flow/)."
    ),
    db: Path | None = typer.Option(None, "--db", help=DB_HELP + " (default RESULTS/reproduce.duckdb)"),
    out: Path | None = typer.Option(
        None, "--out", help="Root folder of the runs (default runs/reproduce, or runs/reproduce-flow)."
    ),
    jobs: int = typer.Option(
        2, "--jobs", help="Runs trained, sampled and scored at once (each in its own long-lived worker process)."
    ),
    threads: int = typer.Option(
        1,
        "--threads",
        help="CPU threads of each run (a run's numbers depend on it, so it is fixed, not derived from --jobs).",
    ),
    regime: str = typer.Option(
        "paper",
        "--regime",
        help="paper (the paper's data reuse, tuned alike, 5 seeds) or early (300 steps of fresh pairs, 3 seeds). The flow world has the early regime only.",
    ),
    seeds: int | None = typer.Option(
        None,
        "--seeds",
        help="Training seeds of every run of the plan (0..N-1; default 5 in the paper regime, 3 in the early one).",
    ),
    eval_seeds: int | None = typer.Option(
        None,
        "--eval-seeds",
        help="Evaluation seeds per toy-test prompt, the same for every run (default 1 in the paper regime, 2 in the early one).",
    ),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Step budget (default: the regime's)."),
    only: str | None = typer.Option(None, "--only", help="Comma-separated subset of the plan's runs."),
    num_prompts: int | None = typer.Option(
        None, "--num-prompts", help="Only the first N toy-test prompts (quick checks)."
    ),
    timestep_pairs: int = typer.Option(256, "--timestep-pairs", help="Validation pairs of each timestep analysis."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """The toy world's full reproduction: every run of the paper's tables, evaluated and analysed, into results/."""
    from ..experiments.reproduce import reproduce as run_reproduce

    flow = world == "toy-flow"
    early = regime == "early" and not flow
    results = results or Path("results/toy-flow" if flow else "results/early-regime" if early else "results")
    db = db or results / "reproduce.duckdb"
    out = out or Path("runs/reproduce-flow" if flow else "runs/reproduce-early" if early else "runs/reproduce")
    summary = run_reproduce(
        results=results,
        db=db,
        out_root=out,
        jobs=jobs,
        threads=threads,
        seeds=seeds,
        eval_seeds=eval_seeds,
        max_steps=max_steps,
        only=parse_list(only) or None,
        num_prompts=num_prompts,
        timestep_pairs=timestep_pairs,
        progress=progress,
        world=world,
        regime=regime,
    )
    typer.echo(f"results: {results}/README.md ({len(summary['written'])} files)")
    if summary["failed"]:
        raise RefbenchError(f"{len(summary['failed'])} runs failed: {', '.join(summary['failed'])}")


def calibrate(
    results: Path = typer.Option(
        Path("results/regime"), "--results", help="Folder for the curve, its figure and decision.json."
    ),
    db: Path | None = typer.Option(
        None, "--db", help=DB_HELP + " (default results/reproduce.duckdb: the tuning reuses its runs)"
    ),
    out: Path = typer.Option(Path("runs/reproduce"), "--out", help="Root folder of the runs."),
    jobs: int = typer.Option(2, "--jobs", help="Runs at once, each in its own worker process."),
    threads: int = typer.Option(1, "--threads", help="CPU threads of each run."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Diffusion-DPO's validation score against learning rate and length: the paper regime's lr and step count."""
    from ..experiments.regime import calibrate as run_calibrate

    if jobs < 1 or threads < 1:
        raise RefbenchError(f"--jobs and --threads must be >= 1; got {jobs} and {threads}")
    decision = run_calibrate(
        results=results,
        db=db or Path("results/reproduce.duckdb"),
        out_root=out,
        jobs=jobs,
        threads=threads,
        progress=progress,
    )
    typer.echo(
        f"lr* = {decision['learning_rate']:g}, S* = {decision['steps']} steps; over-optimisation "
        f"{'shown' if decision['over_optimisation_shown'] else 'not shown'}: {results}/curve.md"
    )


def report(
    world: str = typer.Option("toy", "--world", help="toy or toy-flow."),
    regime: str = typer.Option(
        "paper", "--regime", help="paper or early (the UNet toy world's; results/early-regime/)."
    ),
    results: Path | None = typer.Option(
        None, "--results", help="Folder to rewrite (default results/, results/early-regime/ or results/toy-flow/)."
    ),
    db: Path | None = typer.Option(
        None, "--db", help=DB_HELP + " Default: the world's reproduce.duckdb, else its committed parquet export."
    ),
) -> None:
    """Rewrite a reproduction's tables, figures, claims and README from its stored runs (no training)."""
    from analysis import load_results
    from analysis.report import write_report

    from ..experiments.regime_plan import untestable_claims
    from ..experiments.reproduce_plan import REGIMES, WORLDS

    if world not in WORLDS or regime not in REGIMES:
        raise RefbenchError(
            f"--world must be one of {', '.join(WORLDS)} and --regime one of {', '.join(REGIMES)}; "
            f"got {world!r} and {regime!r}"
        )
    try:
        store = load_results(db, world=world, regime=regime)
    except FileNotFoundError as exc:
        raise RefbenchError(str(exc)) from None
    early = world == "toy-flow" or regime == "early"  # the flow world has the early regime only
    results = results or Path(
        "results/toy-flow" if world == "toy-flow" else "results/early-regime" if early else "results"
    )
    from analysis.claims import store_regime

    paper = not early and store_regime(store) == "paper"  # the untestable claims are the paper regime's
    written = write_report(
        store, results, world=world, reanalysed=True, untestable=untestable_claims() if paper else ()
    )
    typer.echo(f"results: {results}/README.md ({len(written)} files)")


def bench_command(
    quick: bool = typer.Option(
        False, "--quick", help="Fewer repetitions and a smaller toy batch (about a minute on 2 cores)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON instead of the table."),
    out: Path | None = typer.Option(None, "--out", help="Also write the JSON result to this file."),
    repetitions: int | None = typer.Option(
        None, "--repetitions", help="Interleaved repetitions (default 3 quick, 7 full)."
    ),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads (default: torch's choice)."),
    full_size: bool = typer.Option(
        False,
        "--full-size",
        help="SD1.5 / SDXL at their real sizes (random weights, built here): step time and peak memory.",
    ),
    models: str = typer.Option("sd15", "--models", help="With --full-size: sd15, sdxl or both (comma-separated)."),
    lora_ranks: str = typer.Option(
        "64", "--lora-ranks", help="With --full-size: LoRA ranks, 0 for full fine-tuning (e.g. 0,64)."
    ),
    optimizers: str = typer.Option(
        "adamw", "--optimizers", help="With --full-size: adamw, adafactor (comma-separated)."
    ),
    steps: int = typer.Option(2, "--steps", help="With --full-size: optimizer steps per case (the first is warm-up)."),
    root: Path = typer.Option(
        Path("runs/bench-full-size"), "--root", help="With --full-size: where the models are built (SD1.5 ~4 GB)."
    ),
    memory_table: bool = typer.Option(
        False,
        "--memory-table",
        help="Only the memory per rank under FSDP for SDXL, SD3.5 Medium and Large at 1/2/4/8 ranks "
        "(arithmetic from the released configs; nothing is built or trained; --full-size prints it first).",
    ),
    offload_frozen: bool = typer.Option(
        False, "--offload-frozen", help="With --memory-table: the frozen copies in CPU memory (model.offload_frozen)."
    ),
) -> None:
    """Time training and analysis against their bare passes, side by side (see benchmarks/RESULTS.md)."""
    if memory_table:
        from ..bench.sharded_memory import memory_rows
        from ..bench.sharded_memory import memory_table as table

        rows = memory_rows(offload_frozen=offload_frozen)
        typer.echo(json.dumps(rows, indent=1) if as_json else table(rows))
        if out:
            out.write_text(json.dumps(rows, indent=1))
        return
    if full_size:
        from ..bench.full_size import full_size_bench
        from ..bench.sharded_memory import memory_rows
        from ..bench.sharded_memory import memory_table as table

        typer.echo("memory per rank under FSDP (arithmetic; docs/scale.md):\n" + table(memory_rows()))

        rows = full_size_bench(
            root,
            kinds=tuple(parse_list(models)),
            lora_ranks=tuple(parse_list(lora_ranks, int)),
            optimizers=tuple(parse_list(optimizers)),
            steps=steps,
        )
        if out:
            out.write_text(json.dumps(rows, indent=1))
        return
    from ..bench import bench

    typer.echo(bench(quick=quick, as_json=as_json, out=out, repetitions=repetitions, threads=threads))
