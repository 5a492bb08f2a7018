"""The `refbench` command line. It parses and calls; the work happens in the library.

Heavy imports (torch, diffusers, duckdb, pandas) happen inside the commands, so that
`refbench --help` answers at once. Errors meant for the user are one line, no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from . import __version__
from .errors import RefbenchError

app = typer.Typer(
    name="refbench",
    help="Train, evaluate and explain preference optimization of text-to-image diffusion models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DB_HELP = "DuckDB file holding every run and metric."
DbOption = typer.Option(Path("results/refbench.duckdb"), "--db", help=DB_HELP)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"refbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version.")) -> None:
    pass


@app.command()
def runs(db: Path = DbOption, fmt: str = typer.Option("table", "--format", help="table, csv, json or markdown.")) -> None:
    """List the runs in the store, with status and progress."""
    from .display import render_frame
    from .store import Store

    fmt = _format(fmt)
    frame = Store(db).list_runs()
    if frame.empty and fmt == "table":
        typer.echo(f"no runs yet in {db}")
        return
    typer.echo(render_frame(frame, fmt, title=f"runs in {db}"))


@app.command()
def query(
    sql: str = typer.Argument(..., help='SQL to run, e.g. "select * from train_metrics where run = \'refdpo\'".'),
    db: Path = DbOption,
    fmt: str = typer.Option("table", "--format", help="table, csv, json or markdown."),
) -> None:
    """Run read-only SQL on the store and print the result."""
    from .display import render_frame
    from .store import Store

    fmt = _format(fmt)
    typer.echo(render_frame(Store(db).query(sql), fmt))


@app.command()
def config(
    method: Optional[str] = typer.Option(None, "--method", help="Named method (see `refbench config --list`)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Model/data preset: toy, sd15, sdxl."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="TOML or JSON file with [method] [model] [data] [training]."),
    list_all: bool = typer.Option(False, "--list", help="List the named methods and presets."),
) -> None:
    """Print the fully resolved configuration of a method on a preset (as JSON)."""
    from .config import load_config, method_names, preset_names

    if list_all:
        typer.echo("methods: " + ", ".join(method_names()))
        typer.echo("presets: " + ", ".join(preset_names()))
        return
    import json

    resolved = load_config(method=method, preset=preset, config_file=config_file)
    typer.echo(json.dumps(resolved.to_dict(), indent=2))


@app.command()
def train(
    method: Optional[str] = typer.Option(None, "--method", help="Named method: refdpo (default), diff-dpo, sft, timestep-only, ref-noreg, ref-reinit, ref-explore, dspo, diff-kto, mapo."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Model/data preset: toy (default), sd15, sdxl."),
    name: Optional[str] = typer.Option(None, "--name", help="Run name (default: the method's name); runs are addressed by name."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="TOML or JSON config file."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Optimizer steps."),
    tau: Optional[int] = typer.Option(None, "--tau", help="Reference sync period (steps)."),
    delta: Optional[float] = typer.Option(None, "--delta", help="Threshold on D(ref, init)."),
    gamma: Optional[float] = typer.Option(None, "--gamma", help="Timestep sampler discount, in (0, 1]."),
    bins: Optional[int] = typer.Option(None, "--bins", help="Timestep bins K."),
    beta: Optional[float] = typer.Option(None, "--beta", help="DPO beta (T of Eq. 6 folded in)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (per sample when the preset scales it by batch)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of data order, noise and timesteps."),
    model: Optional[str] = typer.Option(None, "--model", help="Hub id or local diffusers folder."),
    data: Optional[str] = typer.Option(None, "--data", help="Hub dataset id or local parquet (Pick-a-Pic v2 schema)."),
    lora_rank: Optional[int] = typer.Option(None, "--lora-rank", help="LoRA rank (0: full fine-tuning)."),
    resolution: Optional[int] = typer.Option(None, "--resolution", help="Training image size in pixels."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Pairs per process per micro-step."),
    accumulation: Optional[int] = typer.Option(None, "--accumulation", help="Gradient accumulation steps."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run of this name from its last checkpoint."),
    db: Path = DbOption,
    out: Path = typer.Option(Path("runs"), "--out", help="Root folder of run folders."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train a method (default: the paper's refdpo on the embedded toy world)."""
    from .config import load_config
    from .train_run import run_training

    overrides = {
        "method": {"tau": tau, "delta": delta, "gamma": gamma, "bins": bins, "beta": beta},
        "training": {"max_steps": max_steps, "learning_rate": lr, "seed": seed, "batch_size": batch_size,
                     "gradient_accumulation_steps": accumulation},
        "model": {"pretrained": model, "lora_rank": lora_rank, "resolution": resolution},
        "data": {"source": data},
    }
    resolved = load_config(method=method, preset=preset, config_file=config_file, overrides=overrides, name=name)
    if resume:  # the stored config wins; flags given explicitly must agree with it
        overrides["method"]["name"] = method
    run_dir = run_training(resolved, db=db, out_root=out, resume=resume, progress=progress, overrides=overrides)
    if run_dir is None:  # not the main process of a multi-process run
        return
    typer.echo(f"run {resolved.name} finished: {run_dir}")
    typer.echo(f"look at it: refbench query \"select step, loss, accuracy, margin, div_ref from train_metrics where run = '{resolved.name}'\" --db {db}")


@app.command()
def generate(
    run: str = typer.Argument(..., help="A run name, or 'base' for the initial model."),
    prompts: str = typer.Option("toy-test", "--prompts", help="Prompt set: toy-train, toy-test."),
    seeds: int = typer.Option(1, "--seeds", help="Seeds per prompt (0 .. N-1)."),
    num_prompts: Optional[int] = typer.Option(None, "--num-prompts", help="Only the first N prompts of the set."),
    guidance_scale: Optional[float] = typer.Option(None, "--guidance-scale", help="Classifier-free guidance scale."),
    steps: Optional[int] = typer.Option(None, "--steps", help="DDIM steps (default 50)."),
    preset: str = typer.Option("toy", "--preset", help="For 'base': the preset whose model to sample."),
    model: Optional[str] = typer.Option(None, "--model", help="For 'base': a hub id or local diffusers folder."),
    db: Path = DbOption,
    out: Path = typer.Option(Path("runs"), "--out", help="Root folder of run folders (images go to RUN/samples/)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Generate images for a prompt set (noise fixed by prompt and seed); skips what exists."""
    from .generate import generate as run_generate

    counts = run_generate(run, prompt_set=prompts, db=db, out_root=out, seeds=seeds, num_prompts=num_prompts,
                          guidance_scale=guidance_scale, steps=steps, progress=progress, preset=preset, model=model)
    if counts["main"]:
        typer.echo(f"{run} on {prompts}: {counts['generated']} images generated, {counts['present']} already there")


@app.command()
def score(
    run: str = typer.Argument(..., help="A run name, or 'base'."),
    metrics: str = typer.Option("all", "--metrics", help="Comma-separated metric names, or 'all'."),
    db: Path = DbOption,
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Score a run's samples with reward metrics; skips what is already scored."""
    from .score import score as run_score

    added = run_score(run, metrics=metrics, db=db, progress=progress)
    typer.echo(", ".join(f"{name}: {count} new" for name, count in added.items()))
    typer.echo(f"means: refbench query \"select metric, avg(value) from scores join samples using (sample_id) "
               f"where run = '{run}' group by metric\" --db {db}")


@app.command()
def winrate(
    run: str = typer.Argument(..., help="The run to evaluate."),
    baseline: str = typer.Option(..., "--baseline", help="A run name, or 'base' (the initial model)."),
    prompts: str = typer.Option("toy-test", "--prompts", help="Prompt set."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="Comma-separated metrics (default: the toy's five)."),
    seeds: int = typer.Option(1, "--seeds", help="Seeds per prompt."),
    num_prompts: Optional[int] = typer.Option(None, "--num-prompts", help="Only the first N prompts."),
    auto: bool = typer.Option(False, "--auto", help="Generate and score what is missing first."),
    fmt: str = typer.Option("table", "--format", help="table, markdown, csv or json."),
    db: Path = DbOption,
    out: Path = typer.Option(Path("runs"), "--out", help="Root folder of run folders."),
) -> None:
    """Win rates of RUN against a baseline, paired by prompt and seed (ties count half), with 95% CIs."""
    import json as json_module
    from dataclasses import asdict

    from .display import render_frame
    from .evaluate import compute_winrates, winrate_frames

    fmt = _format(fmt)
    names = [m.strip() for m in metrics.split(",")] if metrics else None
    results = compute_winrates(run, baseline, db=db, out_root=out, prompt_set=prompts, metrics=names, seeds=seeds,
                               num_prompts=num_prompts, auto=auto, progress=fmt == "table")
    if fmt == "json":
        typer.echo(json_module.dumps([{"run": run, "baseline": baseline, **asdict(r)} for r in results], indent=2))
        return
    table, means = winrate_frames(run, baseline, results)
    typer.echo(render_frame(table, fmt, title=f"win rate % [95% CI] on {prompts}, ties count half"))
    typer.echo(render_frame(means, fmt, title="mean scores"))


toy_app = typer.Typer(help="Build the embedded toy world: base model, its sample pool, preference pairs.", no_args_is_help=True)
app.add_typer(toy_app, name="toy")


@toy_app.command("pretrain")
def toy_pretrain(
    out: Path = typer.Option(Path("runs/toy-pretrain"), "--out", help="Folder for the training state and the model."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (default: the committed model's)."),
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(True, "--resume/--restart", help="Continue from the state in --out if there is one."),
    install: bool = typer.Option(False, "--install", help="Copy the result over the committed base checkpoint."),
) -> None:
    """Pretrain the toy base model on web-like renders of toy-train prompts (resumable)."""
    from .toy.pretrain import pretrain

    kwargs = {} if steps is None else {"steps": steps}
    folder = pretrain(out, seed=seed, resume=resume, **kwargs)
    typer.echo(f"toy base model: {folder}")
    if install:
        import shutil

        from .toy.model import BASE_CHECKPOINT

        shutil.rmtree(BASE_CHECKPOINT, ignore_errors=True)
        shutil.copytree(folder, BASE_CHECKPOINT)
        typer.echo(f"installed as the base checkpoint: {BASE_CHECKPOINT}")


@toy_app.command("base-pool")
def toy_base_pool() -> None:
    """Sample the committed base model on every toy-train prompt (the pairs' base-model generator)."""
    from .toy.dataset import build_base_pool

    typer.echo(f"base-model sample pool: {build_base_pool()}")


@toy_app.command("grid")
def toy_grid_command(
    out: Path = typer.Option(Path("results/toy_grid.png"), "--out", help="PNG to write."),
    prompts: str = typer.Option("toy-test", "--prompts", help="toy-train or toy-test."),
) -> None:
    """Draw prompts with their clean render, a web-like render and base-model samples."""
    from .toy.grid import toy_grid

    typer.echo(f"grid: {toy_grid(out, prompt_set=prompts)}")


@toy_app.command("pairs")
def toy_pairs(
    out: Optional[Path] = typer.Option(None, "--out", help="Folder (default: $REFBENCH_DATA/toy-pairs)."),
    train_pairs: int = typer.Option(20_000, "--train-pairs"),
    validation_pairs: int = typer.Option(2_000, "--validation-pairs"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Build the toy Pick-a-Pic: pairs in the Pick-a-Pic v2 schema, labelled by Bradley-Terry draws."""
    from .toy.dataset import build_toy_pairs

    for split, path in build_toy_pairs(out, train_pairs=train_pairs, validation_pairs=validation_pairs, seed=seed).items():
        typer.echo(f"{split}: {path}")


from .cli_analysis import register as _register_analysis_commands  # noqa: E402

_register_analysis_commands(app)


@app.command("bench")
def bench_command(
    quick: bool = typer.Option(False, "--quick", help="Fewer repetitions and a smaller toy batch (about a minute on 2 cores)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON instead of the table."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the JSON result to this file."),
    repetitions: Optional[int] = typer.Option(None, "--repetitions", help="Interleaved repetitions (default 3 quick, 7 full)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: torch's choice)."),
) -> None:
    """Time training and analysis against their bare passes, side by side (see benchmarks/RESULTS.md)."""
    from .bench import bench

    typer.echo(bench(quick=quick, as_json=as_json, out=out, repetitions=repetitions, threads=threads))


def _format(fmt: str) -> str:
    valid = ("table", "csv", "json", "markdown")
    if fmt not in valid:
        raise RefbenchError(f"unknown format {fmt!r}; valid: {', '.join(valid)}")
    return fmt


def main() -> None:
    try:
        app()
    except RefbenchError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
