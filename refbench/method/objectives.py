"""Which loss each preference objective (``method.objective``) computes from one micro-batch.

The trainer runs the policy, and the reference unless the objective is reference-free, on
2B noisy images (winners then losers; a pair shares its noise and timestep) and hands the
outputs here as a ``PairForward``; ``OBJECTIVES`` maps each objective to its loss. The SFT
objective, which trains on winners alone and has no pairs, stays in the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import torch

from .baseline_losses import diffusion_kto_loss, dspo_loss, mapo_loss
from .losses import PreferenceLoss, diffusion_dpo_loss, per_sample_error

__all__ = ["PairForward", "OBJECTIVES"]


@dataclass(frozen=True)
class PairForward:
    """One micro-batch's forward passes. Rows are winners 0..B-1, then their losers."""

    pairs: int
    target: torch.Tensor  # eps (or v)
    model_pred: torch.Tensor  # with gradients
    ref_pred: torch.Tensor | None  # no gradients; None for a reference-free objective
    weight: torch.Tensor  # (B,) lambda(t) of each pair's timestep
    num_train_timesteps: int

    def halves(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return rows[: self.pairs], rows[self.pairs :]

    @cached_property
    def model_err(self) -> torch.Tensor:
        return per_sample_error(self.model_pred, self.target)

    @cached_property
    def ref_err(self) -> torch.Tensor:
        if self.ref_pred is None:
            raise ValueError("this objective is reference-free: there are no reference errors")
        return per_sample_error(self.ref_pred, self.target)


def _dpo(method, f: PairForward) -> PreferenceLoss:
    return diffusion_dpo_loss(*f.halves(f.model_err), *f.halves(f.ref_err), beta=method.beta, weight=f.weight)


def _dspo(method, f: PairForward) -> PreferenceLoss:
    return dspo_loss(*f.halves(f.model_pred), *f.halves(f.ref_pred), *f.halves(f.target), beta=method.beta, weight=f.weight)


def _kto(method, f: PairForward) -> PreferenceLoss:
    return diffusion_kto_loss(*f.halves(f.model_err), *f.halves(f.ref_err), beta=method.beta, weight=f.weight,
                              desirable_weight=method.desirable_weight, undesirable_weight=method.undesirable_weight)


def _mapo(method, f: PairForward) -> PreferenceLoss:
    return mapo_loss(*f.halves(f.model_err), beta=method.beta, snr=method.mapo_snr,
                     num_timesteps=f.num_train_timesteps, weight=f.weight)


OBJECTIVES: dict[str, Callable[..., PreferenceLoss]] = {"dpo": _dpo, "dspo": _dspo, "kto": _kto, "mapo": _mapo}
