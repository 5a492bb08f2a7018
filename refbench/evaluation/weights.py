"""The weight files behind a reward model's source, and their sha256 (nothing is downloaded)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["weight_files", "digest", "WEIGHT_SUFFIXES"]

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def weight_files(source: str) -> list[Path]:
    """The weight files behind ``source``: local, or a hub snapshot already in the local cache."""
    path = Path(os.path.expanduser(source))
    if not path.exists():
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(source, local_files_only=True))
        except Exception:  # not cached (or not a hub id): nothing to hash
            return []
    if path.is_file():
        return [path]
    return sorted(f for f in path.rglob("*") if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES))


def digest(files: list[Path]) -> str | None:
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()
