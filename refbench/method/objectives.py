"""The objectives a method can train with (``method.objective``), in one registry.

The trainer runs the policy, and the reference when the objective needs one, on the noisy
images of one micro-batch: 2B rows for preference pairs (winners 0..B-1, then their losers; a
pair shares its noise and timestep), or B rows of winners for a winners-only objective. It hands
the outputs here as a ``PairForward`` and calls the objective's function as
``fn(forward, method, **params)``, which returns a ``PreferenceLoss``.

Each objective declares whether it needs a reference model and whether it trains on winners
only; config validation and the trainer read those declarations, so no list of names is written
twice. An objective outside refbench is a function named by import path
(``[method] objective = "my_losses:my_dpo"``), marked with ``preference_objective``; it is
resolved by ``refbench.extensions``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch

from .baseline_losses import diffusion_kto_loss, dspo_loss, mapo_loss
from .losses import PreferenceLoss, diffusion_dpo_loss, per_sample_error, sft_loss

__all__ = [
    "PairForward",
    "Objective",
    "OBJECTIVES",
    "register_objective",
    "preference_objective",
    "objective_from_function",
]


@dataclass(frozen=True)
class PairForward:
    """One micro-batch's forward passes: rows are winners 0..num_pairs-1, then their losers
    (winners only for a winners-only objective)."""

    num_pairs: int
    target: torch.Tensor  # eps (or v, or the flow velocity)
    model_pred: torch.Tensor  # with gradients
    ref_pred: torch.Tensor | None  # no gradients; None when the objective needs no reference
    weight: torch.Tensor  # (num_pairs,) lambda(t) of each pair's timestep
    num_train_timesteps: int

    def halves(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(winners' rows, losers' rows); the losers' part is empty for winners-only batches."""
        return rows[: self.num_pairs], rows[self.num_pairs :]

    @cached_property
    def model_err(self) -> torch.Tensor:
        return per_sample_error(self.model_pred, self.target)

    @cached_property
    def ref_err(self) -> torch.Tensor:
        if self.ref_pred is None:
            raise ValueError("this objective is reference-free: there are no reference errors")
        return per_sample_error(self.ref_pred, self.target)


@dataclass(frozen=True)
class Objective:
    """A registered objective. ``reads`` names the ``MethodConfig`` fields a built-in uses (its
    knobs); an external objective takes its knobs as ``[method.params]`` keyword arguments."""

    name: str
    fn: Callable[..., PreferenceLoss]
    needs_reference: bool = True
    winners_only: bool = False
    reads: tuple[str, ...] = ()
    summary: str = ""
    builtin: bool = True

    def __call__(self, forward: PairForward, method, **params) -> PreferenceLoss:
        return self.fn(forward, method, **params)


OBJECTIVES: dict[str, Objective] = {}


def preference_objective(*, needs_reference: bool = True, winners_only: bool = False):
    """Mark a loss function ``fn(forward, method, **params) -> PreferenceLoss`` with what the
    trainer must run for it (unmarked functions need a reference and train on pairs)."""

    def mark(fn):
        fn.needs_reference, fn.winners_only = needs_reference, winners_only
        return fn

    return mark


def objective_from_function(
    name: str, fn, *, builtin: bool = False, reads: tuple[str, ...] = (), summary: str = ""
) -> Objective:
    """An ``Objective`` from a (marked) function: its declarations are the function's attributes."""
    return Objective(
        name,
        fn,
        bool(getattr(fn, "needs_reference", True)),
        bool(getattr(fn, "winners_only", False)),
        reads,
        summary or (fn.__doc__ or "").strip().split("\n")[0],
        builtin,
    )


def register_objective(
    name: str, *, needs_reference: bool = True, winners_only: bool = False, reads: tuple[str, ...] = ()
):
    """Add a built-in objective under ``name`` (its first docstring line is its summary)."""

    def add(fn):
        fn = preference_objective(needs_reference=needs_reference, winners_only=winners_only)(fn)
        OBJECTIVES[name] = objective_from_function(name, fn, builtin=True, reads=reads)
        return fn

    return add


@register_objective("dpo", reads=("beta",))
def _dpo(forward: PairForward, method) -> PreferenceLoss:
    """Diffusion-DPO (Eq. 6), with lambda(t) as the per-pair reward scale."""
    f = forward
    return diffusion_dpo_loss(*f.halves(f.model_err), *f.halves(f.ref_err), beta=method.beta, weight=f.weight)


@register_objective("sft", needs_reference=False, winners_only=True)
def _sft(forward: PairForward, method) -> PreferenceLoss:
    """Supervised fine-tuning on the winners: the plain denoising loss."""
    return PreferenceLoss(loss=sft_loss(forward.model_err))


@register_objective("dspo", reads=("beta",))
def _dspo(forward: PairForward, method) -> PreferenceLoss:
    """DSPO: a denoising loss on the winners whose target moves along the policy-minus-reference score."""
    f = forward
    return dspo_loss(
        *f.halves(f.model_pred), *f.halves(f.ref_pred), *f.halves(f.target), beta=method.beta, weight=f.weight
    )


@register_objective("kto", reads=("beta", "desirable_weight", "undesirable_weight"))
def _kto(forward: PairForward, method) -> PreferenceLoss:
    """Diffusion-KTO: winners desirable, losers undesirable, each against a batch reference point."""
    f = forward
    return diffusion_kto_loss(
        *f.halves(f.model_err),
        *f.halves(f.ref_err),
        beta=method.beta,
        weight=f.weight,
        desirable_weight=method.desirable_weight,
        undesirable_weight=method.undesirable_weight,
    )


@register_objective("mapo", needs_reference=False, reads=("beta", "mapo_snr"))
def _mapo(forward: PairForward, method) -> PreferenceLoss:
    """MaPO: the winners' denoising loss plus a margin on the odds f(e) of winner against loser."""
    f = forward
    return mapo_loss(
        *f.halves(f.model_err),
        beta=method.beta,
        snr=method.mapo_snr,
        num_timesteps=f.num_train_timesteps,
        weight=f.weight,
    )
