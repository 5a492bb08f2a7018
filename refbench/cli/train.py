"""Commands that configure and train: config, train."""

from __future__ import annotations

from pathlib import Path

import typer

from ..defaults import DEFAULT_DB
from .common import DB_OPTION


def config(
    method: str | None = typer.Option(None, "--method", help="Named method (see `refbench config --list`)."),
    preset: str | None = typer.Option(
        None, "--preset", help="Model/data preset: toy, toy-flow, sd15, sdxl, sd3, sd35."
    ),
    config_file: Path | None = typer.Option(
        None, "--config", help="TOML or JSON file with the sections method, model, data, training."
    ),
    list_all: bool = typer.Option(False, "--list", help="List the named methods, presets, objectives and model kinds."),
) -> None:
    """Print the fully resolved configuration of a method on a preset (as JSON)."""
    from ..config import load_config, method_names, preset_names

    if list_all:
        from ..training.backends import model_kinds

        typer.echo("methods: " + ", ".join(method_names()))
        typer.echo("presets: " + ", ".join(preset_names()))
        from ..method.objectives import OBJECTIVES

        def table(title: str, rows: dict[str, str]) -> None:
            typer.echo(title)
            width = max(map(len, rows))
            for key, text in rows.items():
                typer.echo(f"  {key:<{width}}  {text}")

        table(
            "objectives (method.objective; or 'module:function' of your own, docs/extending.md):",
            {
                name: objective.summary
                + ("" if objective.needs_reference else " [no reference]")
                + (" [winners only]" if objective.winners_only else "")
                for name, objective in sorted(OBJECTIVES.items())
            },
        )
        table("model kinds (model.kind):", model_kinds())
        return
    import json

    resolved = load_config(method=method, preset=preset, config_file=config_file)
    typer.echo(json.dumps(resolved.to_dict(), indent=2))


def train(
    method: str | None = typer.Option(
        None, "--method", help="Named method (default refdpo; `refbench config --list` names them all)."
    ),
    preset: str | None = typer.Option(
        None, "--preset", help="Model/data preset: toy (default), toy-flow, sd15, sdxl, sd3, sd35."
    ),
    name: str | None = typer.Option(
        None, "--name", help="Run name (default: the method's name); runs are addressed by name."
    ),
    config_file: Path | None = typer.Option(None, "--config", help="TOML or JSON config file."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Optimizer steps."),
    tau: int | None = typer.Option(None, "--tau", help="Reference sync period (steps)."),
    delta: float | None = typer.Option(None, "--delta", help="Threshold on D(ref, init)."),
    gamma: float | None = typer.Option(None, "--gamma", help="Timestep sampler discount, in (0, 1]."),
    bins: int | None = typer.Option(None, "--bins", help="Timestep bins K."),
    beta: float | None = typer.Option(None, "--beta", help="DPO beta (T of Eq. 6 folded in)."),
    lr: float | None = typer.Option(
        None, "--lr", help="Learning rate (per sample when the preset scales it by batch)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed of data order, noise and timesteps."),
    model: str | None = typer.Option(None, "--model", help="Hub id or local diffusers folder."),
    vae: str | None = typer.Option(
        None, "--vae", help="Another VAE: hub id or local AutoencoderKL folder (the sdxl preset: the fp16-fix VAE)."
    ),
    t5: bool | None = typer.Option(
        None,
        "--t5/--no-t5",
        help="SD3 / SD3.5: load the T5 text encoder (--no-t5: text_encoder_3 = None, as diffusers allows).",
    ),
    data: str | None = typer.Option(
        None,
        "--data",
        help="Local parquet or hub id (Pick-a-Pic v2 schema), or a named source NAME:LOCATION (refbench data list).",
    ),
    lora_rank: int | None = typer.Option(None, "--lora-rank", help="LoRA rank (0: full fine-tuning)."),
    resolution: int | None = typer.Option(None, "--resolution", help="Training image size in pixels."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Pairs per process per micro-step."),
    accumulation: int | None = typer.Option(
        None, "--accumulation", help="Gradient accumulation steps (instead of --effective-batch)."
    ),
    effective_batch: int | None = typer.Option(
        None,
        "--effective-batch",
        help="Pairs per optimizer step over all processes (the paper: 2048); sets the accumulation.",
    ),
    report_to: str | None = typer.Option(
        None, "--report-to", help="Live curves: tensorboard (in RUN/logs), wandb or none."
    ),
    assign: list[str] | None = typer.Option(
        None,
        "--set",
        help="Any config field: --set SECTION.FIELD=VALUE (repeatable; e.g. --set method.tau=4 --set data.exclude_prompts=toy-val); applied after the other flags.",
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the run of this name (in --db) from its last checkpoint, with its stored config and folder; refused when the store has no such run.",
    ),
    start_or_resume: bool = typer.Option(
        False,
        "--start-or-resume",
        help="Continue the run when the store holds it, else start it (for scripts that may run twice).",
    ),
    db: Path = DB_OPTION,
    out: Path | None = typer.Option(
        None, "--out", help="Root folder of run folders (default runs/; a resumed run stays in its own folder)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train a method (default: the paper's refdpo on the embedded toy world)."""
    from ..config import load_config
    from ..config_layers import assignments
    from ..errors import RefbenchError
    from ..training.run import run_training

    if resume and start_or_resume:
        raise RefbenchError("--resume and --start-or-resume: give one of them")
    overrides = {
        "method": {"tau": tau, "delta": delta, "gamma": gamma, "bins": bins, "beta": beta},
        "training": {
            "max_steps": max_steps,
            "learning_rate": lr,
            "seed": seed,
            "batch_size": batch_size,
            "gradient_accumulation_steps": accumulation,
            "effective_batch": effective_batch,
            "report_to": report_to,
        },
        "model": {"pretrained": model, "vae": vae, "lora_rank": lora_rank, "resolution": resolution, "t5": t5},
        "data": {"source": data},
    }
    for section, values in assignments(assign).items():
        overrides[section].update(values)
    resolved = load_config(method=method, preset=preset, config_file=config_file, overrides=overrides, name=name)
    if resume or start_or_resume:  # the stored config wins; flags given explicitly must agree with it
        overrides["method"]["name"] = method
        overrides["preset"] = preset
    run_dir = run_training(
        resolved,
        db=db,
        out_root=out,
        resume=None if start_or_resume else resume,
        progress=progress,
        overrides=overrides,
    )
    if run_dir is None:  # not the main process of a multi-process run
        return
    typer.echo(f"run {resolved.name} finished: {run_dir}")
    typer.echo(
        f"look at it: refbench query \"select step, loss, accuracy, margin, div_ref from train_metrics where run = '{resolved.name}'\""
        + ("" if db == DEFAULT_DB else f" --db {db}")
    )


def cache_latents(
    out: Path = typer.Option(..., "--out", help="Folder for the cache (resumed if it holds an unfinished one)."),
    preset: str | None = typer.Option(
        None, "--preset", help="Model/data preset: toy, toy-flow, sd15, sdxl, sd3, sd35."
    ),
    model: str | None = typer.Option(None, "--model", help="Hub id or local diffusers folder."),
    data: str | None = typer.Option(
        None,
        "--data",
        help="Local parquet or hub id (Pick-a-Pic v2 schema), or a named source NAME:LOCATION (refbench data list).",
    ),
    resolution: int | None = typer.Option(None, "--resolution", help="Training image size in pixels."),
    dtype: str | None = typer.Option(None, "--dtype", help="float16 (default) or float32."),
    config_file: Path | None = typer.Option(None, "--config", help="TOML or JSON config file."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Write the VAE latents and text embeddings of every usable pair to disk, once, for every run
    that trains this model on this data (it prints the config file that trains from it)."""
    from ..config import load_config
    from ..training.cache_build import build_latent_cache, cache_config_text

    overrides = {
        "model": {"pretrained": model, "resolution": resolution},
        # the cache holds unflipped centre crops
        "data": {"source": data, "latent_cache": str(out), "latent_dtype": dtype, "random_flip": False},
    }
    resolved = load_config(method="diff-dpo", preset=preset, config_file=config_file, overrides=overrides)
    folder = build_latent_cache(resolved, out, progress=progress)
    typer.echo(f"latent cache: {folder}; train from it with --config FILE, FILE holding:")
    typer.echo(cache_config_text(resolved, folder), nl=False)
