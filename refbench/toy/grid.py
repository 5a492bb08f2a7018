"""A picture of the toy world: prompts, their clean renders, web-like renders, base-model samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def toy_grid(
    path: Path, *, prompt_set: str = "toy-test", prompts: int = 8, samples: int = 3, unet_folder: Path | None = None
) -> Path:
    """Write a PNG: one row per prompt: clean render, a web-like render, ``samples`` model samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..training.backends.samplers import ToySampler
    from .model import BASE_CHECKPOINT
    from .prompts import prompt_set as toy_prompt_set
    from .render import render_clean, render_web

    chosen = toy_prompt_set(prompt_set)[:: max(1, len(toy_prompt_set(prompt_set)) // prompts)][:prompts]
    sampler = ToySampler(BASE_CHECKPOINT, unet_folder)
    texts = [p.text for p in chosen for _ in range(samples)]
    from .sampling import DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS

    images = sampler(
        texts, [s for _ in chosen for s in range(samples)], guidance_scale=DEFAULT_GUIDANCE_SCALE, steps=DEFAULT_STEPS
    )
    rng = np.random.default_rng(0)
    columns = 2 + samples
    figure, axes = plt.subplots(len(chosen), columns, figsize=(1.3 * columns + 2.6, 1.3 * len(chosen)))
    for row, prompt in enumerate(chosen):
        tiles = [render_clean(prompt), render_web(prompt, rng)] + list(images[row * samples : (row + 1) * samples])
        for column, tile in enumerate(tiles):
            axis = axes[row, column]
            axis.imshow(tile, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(["clean", "web-like", *[f"base s{s}" for s in range(samples)]][column], fontsize=8)
        axes[row, 0].set_ylabel(
            prompt.text.replace(" on a ", "\non a "), fontsize=7, rotation=0, ha="right", va="center"
        )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
