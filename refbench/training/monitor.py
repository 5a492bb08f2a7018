"""The divergence monitor: D(model, init) of the policy and the reference on a fixed monitor set.

The monitor set is the winners of a few pairs drawn once per process, timesteps spread evenly
over [0, T) and noise fixed once. With the same inputs at every measurement (common random
numbers), D is a smooth function of the weights: it stays constant while the reference is
frozen, and the delta decision does not hinge on which images and timesteps a step drew.
"""

from __future__ import annotations

import torch

from ..method.divergence import divergence
from .backends import Backend, Conditioning
from .batches import BatchSource
from .modelset import REFERENCE
from .seeding import step_generator

__all__ = ["DivergenceMonitor"]


class DivergenceMonitor:
    def __init__(
        self,
        batches: BatchSource,
        backend: Backend,
        models,
        accelerator,
        *,
        size: int,
        seed: int,
        reference_syncs: bool,
    ):
        self.batches, self.pairs = batches, batches.pairs
        self.backend, self.models, self.accelerator = backend, models, accelerator
        self.size, self.seed = size, seed
        self.reference_syncs = reference_syncs  # False: the reference is the initial model, fixed
        self._inputs: tuple[torch.Tensor, Conditioning, torch.Tensor, torch.Tensor] | None = None
        self._cache: dict[str, tuple[int, torch.Tensor]] = {}  # frozen models' errors, see errors()
        self.passes = None  # the trainer's PassCounts, when it counts

    def inputs(self) -> tuple[torch.Tensor, Conditioning, torch.Tensor, torch.Tensor]:
        """(x0, conditioning, timesteps, noise) of the monitor set, built on first use."""
        if self._inputs is None:
            acc, backend = self.accelerator, self.backend
            size = min(self.size, len(self.pairs))
            generator = step_generator(self.seed, "monitor", acc.process_index)
            chosen = torch.randperm(len(self.pairs), generator=generator)[: size * 4].tolist()
            x0, cond = self._winners(chosen, size)
            count = len(x0)
            timesteps = ((torch.arange(count) + 0.5) * backend.num_train_timesteps / count).long().to(acc.device)
            noise = torch.randn(x0.shape, generator=generator).to(acc.device)
            self._inputs = (x0, cond, timesteps, noise)
        return self._inputs

    def _winners(self, candidates: list[int], size: int) -> tuple[torch.Tensor, Conditioning]:
        """Encoded winners of the first ``size`` readable pairs among ``candidates``."""
        parts, found = [], 0
        for start in range(0, len(candidates), size):
            batch = self.batches.encoded_pairs(candidates[start : start + size - found])
            if batch is not None:
                parts.append((batch.x0[: batch.num_pairs], batch.cond))
                found += batch.num_pairs
            if found >= size:
                break
        if not parts:
            raise RuntimeError("no readable pair for the divergence monitor")  # check_readable ran before
        x0 = torch.cat([x for x, _ in parts])
        hidden = torch.cat([c.hidden for _, c in parts])
        added = {k: torch.cat([c.added[k] for _, c in parts]) for k in parts[0][1].added}
        return x0, Conditioning(hidden, added)

    @torch.no_grad()
    def errors(self, name: str) -> torch.Tensor:
        """Per-sample errors of one model on the monitor set. The inputs never change, so the
        frozen models' errors are computed once and reused: the initial model's for the whole run,
        the reference's until its weights next change (``models.reference_version``: a sync, a
        re-init, a load). Only the policy, which moves every step, runs at every measurement."""
        if name == REFERENCE and not self.reference_syncs:
            name = "initial"  # a fixed reference is the initial model
        version = {"initial": 0, REFERENCE: self.models.reference_version}.get(name)  # None: never cached
        x0, cond, timesteps, noise = self.inputs()
        cached = self._cache.get(name)
        if version is not None and cached is not None and cached[0] == version:
            return cached[1]
        backend = self.backend
        x_t, target = backend.add_noise(x0, noise, timesteps), backend.target(x0, noise, timesteps)
        with self.accelerator.autocast(), self.models.use(name) as module:
            # The initial model runs in its module's own mode, as it always has (with LoRA that is the
            # shared denoiser's train mode; switching it changes D in the last bits); the others in eval.
            was_training = module.training
            if name != "initial":
                module.eval()
            errors = backend.errors(module, x_t, timesteps, cond, target)
            module.train(was_training)
        if self.passes is not None:
            self.passes.add("initial" if name == "initial" else "monitor", x_t.shape[0])
        if version is not None:
            self._cache[name] = (version, errors)
        return errors

    @torch.no_grad()
    def divergences(self, which: tuple[str, ...]) -> dict[str, float]:
        """D(model, init) for each named model (POLICY, REFERENCE) on the monitor set, averaged
        over processes so every process takes the same decision."""
        init_err = self.errors("initial")
        values = [divergence(self.errors(name), init_err) for name in which]
        reduced = self.accelerator.reduce(torch.stack(values).float().to(self.accelerator.device), reduction="mean")
        return {name: float(v) for name, v in zip(which, reduced.cpu())}
