"""The `refbench toy` group: build the embedded toy world (base model, its sample pool, pairs)."""

from __future__ import annotations

from pathlib import Path

import typer

toy_app = typer.Typer(
    help="Build the embedded toy world: base model, its sample pool, preference pairs.", no_args_is_help=True
)


@toy_app.command("pretrain")
def toy_pretrain(
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for the training state and the model (default: runs/toy-pretrain, or runs/toy-flow-pretrain).",
    ),
    world: str = typer.Option(
        "unet", "--world", help="unet (the toy preset's UNet) or flow (the toy-flow preset's SD3 transformer)."
    ),
    steps: int | None = typer.Option(None, "--steps", help="Training steps (default: the committed model's)."),
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(True, "--resume/--restart", help="Continue from the state in --out if there is one."),
    install: bool = typer.Option(False, "--install", help="Copy the result over the committed base checkpoint."),
) -> None:
    """Pretrain a toy base model on web-like renders of toy-train prompts (resumable)."""
    from dataclasses import asdict

    from ..errors import RefbenchError
    from ..toy.pretrain import FLOW_SETTINGS, pretrain

    if world not in ("unet", "flow"):
        raise RefbenchError(f"--world must be unet or flow; got {world!r}")
    kwargs = asdict(FLOW_SETTINGS) if world == "flow" else {}
    kwargs.update({} if steps is None else {"steps": steps})
    kwargs["seed"] = seed
    out = out or Path("runs/toy-flow-pretrain" if world == "flow" else "runs/toy-pretrain")
    folder = pretrain(out, resume=resume, **kwargs)
    typer.echo(f"toy {world} base model: {folder}")
    if install:
        import shutil

        from ..toy.flow_model import FLOW_CHECKPOINT
        from ..toy.model import BASE_CHECKPOINT

        target = FLOW_CHECKPOINT if world == "flow" else BASE_CHECKPOINT
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(folder, target)
        typer.echo(f"installed as the {world} base checkpoint: {target}")


@toy_app.command("base-pool")
def toy_base_pool() -> None:
    """Sample the committed base model on every toy-train prompt (the pairs' base-model generator)."""
    from ..toy.dataset import build_base_pool

    typer.echo(f"base-model sample pool: {build_base_pool()}")


@toy_app.command("grid")
def toy_grid_command(
    out: Path = typer.Option(Path("results/toy_grid.png"), "--out", help="PNG to write."),
    prompts: str = typer.Option("toy-test", "--prompts", help="toy-train or toy-test."),
) -> None:
    """Draw prompts with their clean render, a web-like render and base-model samples."""
    from ..toy.grid import toy_grid

    typer.echo(f"grid: {toy_grid(out, prompt_set=prompts)}")


@toy_app.command("pairs")
def toy_pairs(
    out: Path | None = typer.Option(None, "--out", help="Folder (default: $REFBENCH_DATA/toy-pairs)."),
    train_pairs: int = typer.Option(20_000, "--train-pairs"),
    validation_pairs: int = typer.Option(2_000, "--validation-pairs"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Build the toy Pick-a-Pic: pairs in the Pick-a-Pic v2 schema, labelled by Bradley-Terry draws."""
    from ..toy.dataset import build_toy_pairs

    for split, path in build_toy_pairs(
        out, train_pairs=train_pairs, validation_pairs=validation_pairs, seed=seed
    ).items():
        typer.echo(f"{split}: {path}")
