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

# Local path or hub id: the shared rule and its one-line "neither" message live in refbench/hub.py.
from ...hub import hub_file, local_path, looks_local  # noqa: F401  (re-exported for the reward modules)

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


WEIGHT_NAMES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def pretrained_weight_files(source: str) -> list[Path]:
    """The weight files ``from_pretrained(source)`` reads (a local folder or the hub cache), in
    transformers' order of preference; shards listed by an index file. [] if none is found."""
    import json

    def find(name: str) -> Path | None:
        if looks_local(source):
            path = Path(os.path.expanduser(source)) / name
            return path if path.is_file() else None
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, name)
        return Path(cached) if isinstance(cached, str) else None

    for name in WEIGHT_NAMES:
        found = find(name)
        if found is None:
            continue
        if not name.endswith(".index.json"):
            return [found]
        shards = sorted(set(json.loads(found.read_text())["weight_map"].values()))
        return [p for p in (find(s) for s in shards) if p is not None]
    return []


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
