"""The batch source: which pairs each micro-batch holds, and those pairs decoded and encoded.

The pair order is a function of (seed, micro-step, process): epochs of seeded permutations,
split across processes, so a resumed run sees the same batches as an uninterrupted one.
With ``data.cache_latents`` the VAE latents and text embeddings of each pair are kept in
memory (on the CPU) after their first use and reused every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .backends import Backend, Conditioning
from .data import PreferencePairs

__all__ = ["PairOrder", "StepBatch", "BatchSource"]


class PairOrder:
    """Pair indices of every micro-batch: epochs of seeded permutations, split across processes."""

    def __init__(self, num_pairs: int, seed: int):
        self.num_pairs, self.seed = num_pairs, seed
        self._permutations: dict[int, np.ndarray] = {}

    def indices(self, micro_step: int, batch_size: int, process: int, num_processes: int) -> list[int]:
        start = (micro_step * num_processes + process) * batch_size
        out = []
        for position in range(start, start + batch_size):
            epoch, offset = divmod(position, self.num_pairs)
            if epoch not in self._permutations:
                self._permutations = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.num_pairs)}
            out.append(int(self._permutations[epoch][offset]))
        return out


@dataclass
class StepBatch:
    x0: torch.Tensor  # (2B, ...) winners then losers (winners only for SFT)
    cond: Conditioning  # (B, ...)
    pairs: int


class BatchSource:
    """Encoded micro-batches for one process: ``micro_batch(k)`` is the k-th of the run."""

    def __init__(self, pairs: PreferencePairs, backend: Backend, *, batch_size: int, seed: int, winners_only: bool,
                 cache_latents: bool, process_index: int = 0, num_processes: int = 1, device="cpu"):
        self.pairs, self.backend, self.batch_size = pairs, backend, batch_size
        self.winners_only = winners_only  # SFT trains on winners alone
        self.process_index, self.num_processes, self.device = process_index, num_processes, device
        self.order = PairOrder(len(pairs), seed)
        # pair index -> (latents of winner and loser, conditioning) on the CPU, or None when unreadable
        self._encoded: dict[int, tuple[torch.Tensor, Conditioning] | None] | None = {} if cache_latents else None

    def micro_batch(self, micro_step: int) -> StepBatch | None:
        """The micro-batch's pairs, encoded; None when every image in it was unreadable."""
        indices = self.order.indices(micro_step, self.batch_size, self.process_index, self.num_processes)
        if self._encoded is not None:
            return self._cached_batch(indices)
        collated = PreferencePairs.collate([self.pairs[i] for i in indices])
        if collated is None:
            return None
        captions, winners, losers = collated
        return self.encode(captions, winners, losers)

    def encode(self, captions: list[str], winners: np.ndarray, losers: np.ndarray) -> StepBatch:
        images = winners if self.winners_only else np.concatenate([winners, losers])
        with torch.no_grad():
            x0 = self.backend.encode_images(images)
            cond = self.backend.encode_text(captions)
        return StepBatch(x0, cond, len(captions))

    def _cached_batch(self, indices: list[int]) -> StepBatch | None:
        missing = [i for i in indices if i not in self._encoded]
        usable = [(i, item) for i, item in ((i, self.pairs[i]) for i in missing) if item is not None]
        if usable:
            captions, winners, losers = PreferencePairs.collate([item for _, item in usable])
            fresh = self.encode(captions, winners, losers)
            n = fresh.pairs
            for k, (i, _) in enumerate(usable):
                x0 = fresh.x0[[k]] if fresh.x0.shape[0] == n else fresh.x0[[k, n + k]]
                self._encoded[i] = (x0.cpu(), fresh.cond.select(slice(k, k + 1)).to("cpu"))
        for i in missing:
            self._encoded.setdefault(i, None)  # unreadable: skipped from now on, counted once
        entries = [self._encoded[i] for i in indices if self._encoded[i] is not None]
        if not entries:
            return None
        x0 = torch.cat([e[0][:1] for e in entries] + [e[0][1:] for e in entries]).to(self.device)
        hidden = torch.cat([e[1].hidden for e in entries]).to(self.device)
        added = {k: torch.cat([e[1].added[k] for e in entries]).to(self.device) for k in entries[0][1].added}
        return StepBatch(x0, Conditioning(hidden, added), len(entries))
