"""The batch source: which pairs each micro-batch holds, and those pairs decoded and encoded.

The pair order is a function of (seed, micro-step, process): epochs of seeded permutations,
split across processes, so a resumed run sees the same batches as an uninterrupted one.
Images are read and decoded by a ``torch.utils.data.DataLoader`` (``data.num_workers``
workers, prefetching, pinned memory on a GPU); its batch sampler yields the micro-batches in
order from the first one asked for, so the batches are the same whatever the number of
workers. A pair found unreadable by any worker is counted once, here, in the main process.
With ``data.latent_cache`` the batches come from the on-disk cache instead: no image is
decoded and no VAE runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .backends import Backend, Conditioning
from .data import PreferencePairs, flips
from .latent_cache import LatentCache

__all__ = ["PairOrder", "StepBatch", "BatchSource", "decoded_pair_loader"]


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
    num_pairs: int


class _DecodedPairs(torch.utils.data.Dataset):
    """Key -> (index, (caption, winner, loser) or None); runs in the DataLoader's workers. A key
    is a pair index, or (index, micro-step, slot) when images are flipped at random: the coins
    are a function of (seed, micro-step, slot), whichever worker decodes the pair."""

    def __init__(self, pairs: PreferencePairs, flip_seed: int | None = None):
        self.pairs, self.flip_seed = pairs, flip_seed

    def __getitem__(self, key):
        if isinstance(key, tuple):
            index, micro_step, slot = key
            return index, self.pairs.load(index, flips(self.flip_seed, micro_step, slot))
        return key, self.pairs.load(key)

    def __len__(self) -> int:
        return len(self.pairs)


def _collate(items) -> dict:
    """In the worker: stack the readable pairs as uint8 tensors (pinnable), list the unreadable."""
    readable = [(i, item) for i, item in items if item is not None]
    out = {
        "indices": [i for i, _ in readable],
        "unreadable": [i for i, item in items if item is None],
        "captions": [item[0] for _, item in readable],
        "winners": None,
        "losers": None,
    }
    if readable:
        out["winners"] = torch.from_numpy(np.stack([item[1] for _, item in readable]))
        out["losers"] = torch.from_numpy(np.stack([item[2] for _, item in readable]))
    return out


def decoded_pair_loader(
    pairs: PreferencePairs, batches, *, num_workers: int, pin_memory: bool = False, flip_seed: int | None = None
):
    """A DataLoader yielding, in order, one collated dict per list of keys in ``batches``."""
    return torch.utils.data.DataLoader(
        _DecodedPairs(pairs, flip_seed),
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=pin_memory,
        prefetch_factor=2 if num_workers else None,
    )


class _MicroBatchIndices:
    """The batch sampler: pair indices of micro-steps start, start + 1, ... (without end)."""

    def __init__(
        self,
        order: PairOrder,
        start: int,
        batch_size: int,
        process: int,
        num_processes: int,
        with_positions: bool = False,
    ):
        self.order, self.start, self.args = order, start, (batch_size, process, num_processes)
        self.with_positions = with_positions  # keys (index, micro-step, slot), for the flips

    def __iter__(self):
        micro_step = self.start
        while True:
            indices = self.order.indices(micro_step, *self.args)
            yield [(i, micro_step, slot) for slot, i in enumerate(indices)] if self.with_positions else indices
            micro_step += 1


class BatchSource:
    """Encoded micro-batches for one process: ``micro_batch(k)`` is the k-th of the run."""

    def __init__(
        self,
        pairs: PreferencePairs,
        backend: Backend,
        *,
        batch_size: int,
        seed: int,
        winners_only: bool,
        num_workers: int = 0,
        latent_cache: LatentCache | None = None,
        random_flip: bool = False,
        process_index: int = 0,
        num_processes: int = 1,
        device="cpu",
    ):
        self.pairs, self.backend, self.batch_size, self.seed = pairs, backend, batch_size, seed
        self.random_flip = random_flip
        self._empty = None  # the empty prompt's conditioning (caption dropout), encoded once
        self.winners_only = winners_only  # SFT trains on winners alone
        self.process_index, self.num_processes, self.device = process_index, num_processes, device
        self.num_workers, self.cache = num_workers, latent_cache
        self.order = PairOrder(len(pairs), seed)
        self._loader_iter, self._next_micro_step = None, None

    def micro_batch(self, micro_step: int) -> StepBatch | None:
        """The micro-batch's pairs, encoded; None when every image in it was unreadable."""
        if self.cache is not None:
            return self.encoded_pairs(
                self.order.indices(micro_step, self.batch_size, self.process_index, self.num_processes)
            )
        if self._loader_iter is None or micro_step != self._next_micro_step:  # first use, or a jump (resume)
            self.close()
            sampler = _MicroBatchIndices(
                self.order,
                micro_step,
                self.batch_size,
                self.process_index,
                self.num_processes,
                with_positions=self.random_flip,
            )
            pin = torch.device(self.device).type == "cuda"
            self._loader_iter = iter(
                decoded_pair_loader(
                    self.pairs, sampler, num_workers=self.num_workers, pin_memory=pin, flip_seed=self.seed
                )
            )
        self._next_micro_step = micro_step + 1
        return self._encode_collated(next(self._loader_iter))

    def encoded_pairs(self, indices: list[int]) -> StepBatch | None:
        """The readable pairs among ``indices``, encoded, read here in the main process (the monitor
        set, and every batch when the latent cache is used)."""
        if self.cache is not None:
            x0, cond, count, unreadable = self.cache.pairs(indices, self.winners_only)
            for index in unreadable:
                self.pairs.note_unreadable(index)
            return None if x0 is None else StepBatch(x0.to(self.device), cond.to(self.device), count)
        items = [(i, self.pairs[i]) for i in indices]
        return self._encode_collated(_collate([(i, item) for i, item in items]))

    def _encode_collated(self, batch: dict) -> StepBatch | None:
        for index in batch["unreadable"]:
            self.pairs.note_unreadable(index)
        if batch["winners"] is None:
            return None
        winners, losers = batch["winners"].numpy(), batch["losers"].numpy()
        images = winners if self.winners_only else np.concatenate([winners, losers])
        with torch.no_grad():
            x0 = self.backend.encode_images(images)
            cond = self.backend.encode_text(batch["captions"])
        return StepBatch(x0, cond, len(batch["captions"]))

    def empty_conditioning(self, count: int) -> Conditioning:
        """The empty prompt's conditioning, ``count`` times: from the cache (it holds it once) or
        encoded once by the backend."""
        if self._empty is None:
            if self.cache is not None:
                self._empty = self.cache.empty_conditioning(1)
            else:
                with torch.no_grad():
                    self._empty = self.backend.encode_text([""])
            self._empty = self._empty.to(self.device)
        return self._empty.repeat(count)

    def close(self) -> None:
        """Stop the DataLoader's workers (they also stop when the source is dropped)."""
        self._loader_iter = None
