"""Commands that evaluate runs: generate, score, winrate, make-pairs (and doctor)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..defaults import DEFAULT_OUT
from .common import DB_OPTION, OUT_OPTION, parse_format

UNET_HELP = (
    "A released UNet (hub id or folder, weights at its root or in unet/), e.g. mhdang/dpo-sd1.5-text2image-v1, "
    "put into the base pipeline of --preset / --model; its samples go under RUN, with its source and sha256."
)


def generate(
    run: str = typer.Argument(
        ..., help="A run name, 'base' for the initial model, or with --unet the name to file its samples under."
    ),
    prompts: str | None = typer.Option(
        None,
        "--prompts",
        help="Prompt set: toy-test, toy-train, toy-val, pickapic-test, hpdv2, partiprompts, or NAME=FILE "
        "(default: toy-test for the toy worlds, partiprompts for real models).",
    ),
    seeds: int = typer.Option(1, "--seeds", help="Seeds per prompt (0 .. N-1)."),
    num_prompts: int | None = typer.Option(None, "--num-prompts", help="Only the first N prompts of the set."),
    guidance_scale: float | None = typer.Option(None, "--guidance-scale", help="Classifier-free guidance scale."),
    steps: int | None = typer.Option(None, "--steps", help="DDIM steps (default 50)."),
    preset: str = typer.Option("toy", "--preset", help="For 'base': the preset whose model to sample."),
    model: str | None = typer.Option(None, "--model", help="For 'base': a hub id or local diffusers folder."),
    unet: str | None = typer.Option(None, "--unet", help=UNET_HELP),
    regenerate: bool = typer.Option(
        False,
        "--regenerate",
        help="Remake the run's samples on this prompt set under the asked protocol (their old images and scores are removed).",
    ),
    db: Path = DB_OPTION,
    out: Path = typer.Option(DEFAULT_OUT, "--out", help="Root folder of run folders (images go to RUN/samples/)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Generate images for a prompt set (noise fixed by prompt and seed); skips what exists."""
    from ..evaluation.generate import generate as run_generate

    counts = run_generate(
        run,
        prompt_set=prompts,
        db=db,
        out_root=out,
        seeds=seeds,
        num_prompts=num_prompts,
        guidance_scale=guidance_scale,
        steps=steps,
        progress=progress,
        preset=preset,
        model=model,
        regenerate=regenerate,
        unet=unet,
    )
    if counts["main"]:
        typer.echo(
            f"{run} on {counts['prompt_set']}: {counts['generated']} images generated, {counts['present']} already there"
        )


def score(
    run: str = typer.Argument(..., help="A run name, or 'base'."),
    metrics: str = typer.Option("all", "--metrics", help="Comma-separated metric names, or 'all'."),
    db: Path = DB_OPTION,
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Score a run's samples with reward metrics; skips what is already scored."""
    from ..evaluation.score import score as run_score

    added = run_score(run, metrics=metrics, db=db, progress=progress)
    typer.echo(", ".join(f"{name}: {count} new" for name, count in added.items()))
    typer.echo(
        f'means: refbench query "select metric, avg(value) from scores join samples using (sample_id) '
        f"where run = '{run}' group by metric\" --db {db}"
    )


def winrate(
    run: str = typer.Argument(..., help="The run to evaluate."),
    baseline: str = typer.Option(..., "--baseline", help="A run name, or 'base' (the initial model)."),
    prompts: str | None = typer.Option(
        None, "--prompts", help="Prompt set (default: toy-test for the toy worlds, partiprompts for real models)."
    ),
    metrics: str | None = typer.Option(None, "--metrics", help="Comma-separated metrics (default: the toy's five)."),
    seeds: int = typer.Option(1, "--seeds", help="Seeds per prompt."),
    num_prompts: int | None = typer.Option(None, "--num-prompts", help="Only the first N prompts."),
    auto: bool = typer.Option(
        False, "--auto", help="Generate and score what is missing first (never mixing protocols)."
    ),
    steps: int | None = typer.Option(
        None, "--steps", help="With --auto: sampling steps of the samples it makes (default 50)."
    ),
    guidance_scale: float | None = typer.Option(
        None, "--guidance-scale", help="With --auto: guidance of the samples it makes."
    ),
    preset: str | None = typer.Option(
        None, "--preset", help="With --auto: the model of 'base' and --unet (default: RUN's preset, else toy)."
    ),
    model: str | None = typer.Option(None, "--model", help="With --auto: a hub id or folder for 'base' and --unet."),
    unet: str | None = typer.Option(
        None, "--unet", help="With --auto: RUN's samples come from this UNet. " + UNET_HELP
    ),
    fmt: str = typer.Option("table", "--format", help="table, markdown, csv or json."),
    db: Path = DB_OPTION,
    out: Path = OUT_OPTION,
) -> None:
    """Win rates of RUN against a baseline, paired by prompt and seed (ties count half), with 95% CIs."""
    import json as json_module
    from dataclasses import asdict

    from ..display import render_frame
    from ..evaluation.winrates import compute_winrates, winrate_defaults, winrate_frames, winrate_protocol

    fmt = parse_format(fmt)
    preset, model, prompts = winrate_defaults(run, db=db, preset=preset, model=model, prompt_set=prompts)
    names = [m.strip() for m in metrics.split(",")] if metrics else None
    results = compute_winrates(
        run,
        baseline,
        db=db,
        out_root=out,
        prompt_set=prompts,
        metrics=names,
        seeds=seeds,
        num_prompts=num_prompts,
        auto=auto,
        progress=fmt == "table",
        steps=steps,
        guidance_scale=guidance_scale,
        preset=preset,
        model=model,
        unet=unet,
    )
    if fmt == "json":
        typer.echo(json_module.dumps([{"run": run, "baseline": baseline, **asdict(r)} for r in results], indent=2))
        return
    table, means = winrate_frames(run, baseline, results)
    for line in winrate_protocol(run, baseline, db=db, prompt_set=prompts, metrics=[r.metric for r in results]):
        typer.echo(line, err=fmt == "csv")  # CSV on stdout stays machine-readable
    typer.echo(render_frame(table, fmt, title=f"win rate % [95% CI] on {prompts}, ties count half"))
    typer.echo(render_frame(means, fmt, title="mean scores"))


def doctor(
    metrics: list[str] | None = typer.Argument(
        None, help="Metrics, each NAME or NAME=/local/path (default: the paper's five)."
    ),
    online: bool = typer.Option(
        False,
        "--online",
        help="Let it reach the model hub for what is not on disk (default: offline, HF_HUB_OFFLINE=1).",
    ),
) -> None:
    """Check that reward models load here, offline, as `score` loads them: source, weights sha256, size, status."""
    import os

    if not online:  # before huggingface_hub is imported: it reads the variable once, at import
        os.environ["HF_HUB_OFFLINE"] = "1"
    from ..errors import RefbenchError
    from ..evaluation.doctor import check_metrics, environment
    from ..evaluation.metrics import list_metrics

    if not metrics:
        for package, version in environment().items():
            typer.echo(f"{package:<16} {version}")
        typer.echo("")
    checks = check_metrics(metrics or list_metrics(kind="reward-model"))
    for check in checks:
        size = f"{check.size_bytes / 2**20:.1f} MB" if check.size_bytes else "-"
        typer.echo(f"{check.name:<16} {'ok    ' if check.ok else 'FAILED'} {check.source}")
        typer.echo(f"{'':<16} sha256 {check.sha256 or '- (no weight file found here)'}  size {size}")
        if not check.ok:
            typer.echo(f"{'':<16} {check.status}")
    failed = [c.name for c in checks if not c.ok]
    if failed:
        raise RefbenchError(f"{len(failed)} of {len(checks)} reward models cannot be loaded here: {', '.join(failed)}")


def make_pairs(
    model: str = typer.Option(
        ...,
        "--model",
        help="Who samples: a run name (its final policy), 'base' (the preset's model), a LoRA folder, or a hub id / model folder.",
    ),
    prompts: str = typer.Option(..., "--prompts", help="Prompt set (as generate takes), e.g. toy-train or NAME=FILE."),
    reward: str = typer.Option(
        ..., "--reward", help="A registered metric (e.g. human, pickscore, or pickscore=/local/path) that ranks them."
    ),
    per_prompt: int = typer.Option(..., "--per-prompt", help="Images per prompt (K >= 2), seeds S .. S+K-1."),
    out: Path = typer.Option(..., "--out", help="Output folder: OUT/pairs.parquet (Pick-a-Pic v2 schema) at the end."),
    min_gap: float | None = typer.Option(
        None, "--min-gap", help="Every pair whose score gap exceeds G (default: best against worst per prompt)."
    ),
    tie_tolerance: float = typer.Option(
        0.0, "--tie-tolerance", help="A pair whose scores differ by at most this is a tie (label_0 = 0.5)."
    ),
    seed: int = typer.Option(0, "--seed", help="First seed S (the noise is fixed by prompt and seed)."),
    num_prompts: int | None = typer.Option(None, "--num-prompts", help="Only the first N prompts of the set."),
    steps: int | None = typer.Option(None, "--steps", help="Sampling steps (default 50)."),
    guidance_scale: float | None = typer.Option(None, "--guidance-scale", help="Classifier-free guidance scale."),
    preset: str = typer.Option("toy", "--preset", help="The model preset (kind, resolution) of base, folder or LoRA."),
    base_model: str | None = typer.Option(
        None, "--base-model", help="For a LoRA --model: the model it adapts (default: the preset's)."
    ),
    resolution: int | None = typer.Option(
        None, "--resolution", help="Sampling resolution (default: the model's, as its preset or run says)."
    ),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per sampler call (a chunk is N // K prompts)."),
    db: Path = DB_OPTION,
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """On-policy pairs from AI feedback: K images per prompt from a model, ranked by a reward model,
    written as Pick-a-Pic pairs for `refbench train --data OUT`; a rerun resumes."""
    from ..evaluation.make_pairs import make_pairs as run_make_pairs

    summary = run_make_pairs(
        model,
        prompt_set=prompts,
        reward=reward,
        per_prompt=per_prompt,
        out=out,
        db=db,
        min_gap=min_gap,
        tie_tolerance=tie_tolerance,
        seed=seed,
        num_prompts=num_prompts,
        steps=steps,
        guidance_scale=guidance_scale,
        preset=preset,
        base_model=base_model,
        resolution=resolution,
        batch_size=batch_size,
        progress=progress,
    )
    state = "already complete" if summary["already_complete"] else "written"
    typer.echo(
        f"{summary['out']}/pairs.parquet {state}: {summary['pairs']} pairs ({summary['ties']} ties) "
        f"from {summary['prompts']} prompts"
    )
