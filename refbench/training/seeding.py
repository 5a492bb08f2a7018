"""Randomness as a function of (seed, keys): nothing to checkpoint, so a resumed run repeats an
uninterrupted one exactly and a batch does not depend on the batches before it."""

from __future__ import annotations

import hashlib

import torch

__all__ = ["step_generator"]


def step_generator(seed: int, *keys: object) -> torch.Generator:
    """A generator whose state depends only on (seed, keys): no RNG state to checkpoint."""
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
