"""VAE latents and text embeddings of every usable pair, on disk, shared by every run that matches.

Layout of a cache folder (numpy ``.npy`` files, memory-mapped when read, so a run holds only
the rows of its batches):

    meta.json            fingerprint, counts, shapes, complete flag
    latents.npy          (N, 2, C, h, w)   winner then loser, VAE posterior mean x scaling factor
    status.npy           (N,) uint8        0 not yet encoded, 1 encoded, 2 an image is unreadable
    caption_index.npy    (N,) int32        row of the pair's caption in the text arrays
    captions.json        unique captions; index 0 is the empty prompt (for caption dropout)
    text_hidden.npy      (U, L, D)         the denoiser's encoder_hidden_states per unique caption
    text_<key>.npy       (U, ...)          added conditioning (SDXL: text_embeds, time_ids; SD3: pooled_projections)
    text_status.npy      (U,) uint8        0 not yet encoded, 1 encoded

Captions are stored once each (Pick-a-Pic repeats prompts across pairs). Images are centre
crops without flips: a run that asks for random flips cannot use a cache (one line says so).
The fingerprint names everything the contents depend on (model kind, the image and text
encoders' weight files, resolution, crop, flip, dtype, the screened data rows); a run whose
settings differ is refused in one line that lists what differs. A build writes status after
the arrays it covers, so an interrupted build resumes with the chunks it had not finished.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import RefbenchError
from .backends import Conditioning

__all__ = ["LatentCache", "CacheMismatch", "TEXT_PREFIX"]

TEXT_PREFIX = "text_"
EMPTY_CAPTION = 0  # row of the empty prompt in the text arrays


class CacheMismatch(RefbenchError):
    """The cache on disk was made with other settings than the run's."""


def describe_difference(stored: dict, wanted: dict) -> str:
    keys = sorted(set(stored) | set(wanted))
    return ", ".join(
        f"{k} ({stored.get(k)!r} in the cache, {wanted.get(k)!r} for this run)"
        for k in keys
        if stored.get(k) != wanted.get(k)
    )


class LatentCache:
    """A finished cache, read through memory maps."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.latents = np.load(self.folder / "latents.npy", mmap_mode="r")
        self.status = np.load(self.folder / "status.npy", mmap_mode="r")
        self.caption_index = np.load(self.folder / "caption_index.npy", mmap_mode="r")
        self.hidden = np.load(self.folder / "text_hidden.npy", mmap_mode="r")
        self.added = {
            key: np.load(self.folder / f"{TEXT_PREFIX}{key}.npy", mmap_mode="r") for key in self.meta["added_keys"]
        }

    @classmethod
    def open(cls, folder: Path, fingerprint: dict) -> LatentCache:
        folder = Path(folder)
        meta_file = folder / "meta.json"
        if not meta_file.is_file():
            raise CacheMismatch(f"no latent cache in {folder}; build it with refbench cache-latents")
        meta = json.loads(meta_file.read_text())
        if meta.get("fingerprint") != fingerprint:
            raise CacheMismatch(
                f"the latent cache {folder} was made with other settings: "
                f"{describe_difference(meta.get('fingerprint', {}), fingerprint)}"
            )
        if not meta.get("complete"):
            raise CacheMismatch(
                f"the latent cache {folder} is not finished; run refbench cache-latents again to resume it"
            )
        return cls(folder)

    def __len__(self) -> int:
        return len(self.status)

    def unreadable(self) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.status) == 2)

    def conditioning(self, caption_rows: np.ndarray) -> Conditioning:
        rows = np.asarray(caption_rows)
        return Conditioning(
            torch.from_numpy(np.ascontiguousarray(self.hidden[rows])).float(),
            {k: torch.from_numpy(np.ascontiguousarray(v[rows])).float() for k, v in self.added.items()},
        )

    def empty_conditioning(self, count: int = 1) -> Conditioning:
        """The empty prompt's conditioning, repeated ``count`` times (caption dropout)."""
        return self.conditioning(np.full(count, EMPTY_CAPTION))

    def pairs(self, indices: list[int], winners_only: bool):
        """(x0 of the readable pairs: winners then losers (or winners only), their conditioning,
        how many) and the unreadable indices among ``indices``; x0 is None when none is readable."""
        indices = np.asarray(indices, dtype=np.int64)
        status = np.asarray(self.status[indices]) if len(indices) else np.zeros(0, np.uint8)
        usable, unreadable = indices[status == 1], indices[status == 2].tolist()
        if not len(usable):
            return None, None, 0, unreadable
        # Memory maps want sorted reads to be fast; put the rows back in batch order after.
        order = np.argsort(usable, kind="stable")
        latents = np.empty((len(usable), *self.latents.shape[1:]), dtype=self.latents.dtype)
        latents[order] = self.latents[usable[order]]
        latents = torch.from_numpy(latents).float()
        x0 = latents[:, 0] if winners_only else torch.cat([latents[:, 0], latents[:, 1]])
        return x0, self.conditioning(self.caption_index[usable]), len(usable), unreadable
