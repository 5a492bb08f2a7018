"""Helpers shared by the reward models: device, batching, images, weight sources.

Nothing here imports torch, transformers or open_clip at module level: importing
``refbench.evaluation.rewards`` (which the metric registry does to list names) must stay cheap.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from PIL import Image

# Images per model call: large enough to keep a GPU busy, small enough for a CPU's memory
# with ViT-H (activations of 32 images at 224 px are about 2 GB in fp32).
BATCH_SIZE = 32


def device() -> str:
    """Where the reward models run: ``REFBENCH_DEVICE`` (e.g. ``cuda``), else the CPU."""
    return os.environ.get("REFBENCH_DEVICE", "cpu")


def batch_size() -> int:
    return int(os.environ.get("REFBENCH_REWARD_BATCH", BATCH_SIZE))


def batches(n: int) -> Iterator[slice]:
    size = max(1, batch_size())
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def to_pil(images: np.ndarray) -> list[Image.Image]:
    """uint8 (N, H, W, 3) -> PIL RGB images; resizing is left to each model's own preprocessing."""
    from PIL import Image

    return [Image.fromarray(np.ascontiguousarray(img), mode="RGB") for img in images]


def pooled(out: Any) -> torch.Tensor:
    """Projected CLIP features: a tensor in transformers 4, ``.pooler_output`` of an output in 5."""
    import torch

    return out if isinstance(out, torch.Tensor) else out.pooler_output


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of two (N, D) feature matrices."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    return (a * b).sum(dim=-1)


def looks_local(source: str) -> bool:
    """A path rather than a hub id: it exists, or starts like a path (``/``, ``.``, ``~``)."""
    return os.path.exists(os.path.expanduser(source)) or source.startswith(("/", ".", "~"))


def local_path(source: str) -> Path:
    """The local file or folder ``source``; FileNotFoundError (reported as 'not found') if absent."""
    path = Path(os.path.expanduser(source))
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {source}")
    return path


def hub_file(repo_id: str, filename: str, repo_type: str | None = None) -> str:
    """Path of ``filename`` from a hub repo (cache first; offline mode never downloads).

    Every failure (offline, unknown repo or file, bad id) becomes a FileNotFoundError,
    which the registry reports as one line naming the metric and the source.
    """
    import huggingface_hub
    from huggingface_hub import errors

    try:
        return huggingface_hub.hf_hub_download(repo_id, filename, repo_type=repo_type)
    except (OSError, errors.EntryNotFoundError, errors.HFValidationError) as exc:
        raise FileNotFoundError(f"{repo_id}/{filename}: {type(exc).__name__}") from exc


def find_file(folder: Path, names: tuple[str, ...], patterns: tuple[str, ...] = ()) -> Path:
    """The first of ``names`` in ``folder``, else the single file matching ``patterns``."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    matches = sorted({p for pat in patterns for p in folder.glob(pat) if p.is_file()})
    if len(matches) == 1:
        return matches[0]
    wanted = ", ".join(names + patterns)
    raise FileNotFoundError(f"{folder}: expected one of {wanted}, found {len(matches)} candidates")
