"""Timestep samplers and reward-scale schedules. Pure math: no I/O, no diffusers.

DDPM convention: t runs over ``[0, T)``; large t is noisy, i.e. the *start* of
generation. The paper's timestep-aware training draws t from Cat(gamma^k) over K
bins taken in denoising order (bin 0 = noisiest) and scales the DPO logit by
``lambda(t) = 1 + norm(1 / sqrt(SNR(t)))``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

__all__ = [
    "TimestepSampler",
    "UniformSampler",
    "GammaBinnedSampler",
    "make_timestep_sampler",
    "bin_edges",
    "reward_scale",
    "register_reward_scale",
    "reward_scale_names",
]


class TimestepSampler(Protocol):
    num_train_timesteps: int

    def probabilities(self) -> torch.Tensor:
        """Probability of every t in [0, T), shape (T,), summing to 1."""

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``batch_size`` timesteps (int64)."""


def bin_edges(num_train_timesteps: int, bins: int) -> torch.Tensor:
    """Ascending edges e_0 = 0 < ... < e_K = T; ascending bin j is [e_j, e_{j+1}).

    When T is not a multiple of K the widths differ by at most one timestep.
    """
    if not 1 <= bins <= num_train_timesteps:
        raise ValueError(f"bins must be in [1, {num_train_timesteps}], got {bins}")
    return torch.div(torch.arange(bins + 1) * num_train_timesteps, bins, rounding_mode="floor")


class _CategoricalSampler:
    """Shared sampling: a categorical draw over all T timesteps with the subclass's probabilities.

    Drawing a bin and then t uniformly inside it is the same distribution as drawing t with
    probability p(bin) / width(bin), which is what ``probabilities`` returns.
    """

    num_train_timesteps: int
    _probabilities: torch.Tensor

    def probabilities(self) -> torch.Tensor:
        return self._probabilities.clone()

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return torch.multinomial(self._probabilities, batch_size, replacement=True, generator=generator)


class UniformSampler(_CategoricalSampler):
    """t ~ U{0, ..., T-1}: Diffusion-DPO's sampler."""

    def __init__(self, num_train_timesteps: int):
        if num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
        self.num_train_timesteps = num_train_timesteps
        self._probabilities = torch.full((num_train_timesteps,), 1.0 / num_train_timesteps, dtype=torch.float64)


class GammaBinnedSampler(_CategoricalSampler):
    """Bin k in denoising order (k = 0 noisiest) has probability gamma^k / sum_j gamma^j.

    gamma = 1 is uniform over bins (and over t when the bins have equal widths).
    """

    def __init__(self, num_train_timesteps: int, gamma: float, bins: int):
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        edges = bin_edges(num_train_timesteps, bins)
        self.num_train_timesteps = num_train_timesteps
        self.gamma = gamma
        self.bins = bins
        denoising_index = torch.arange(bins - 1, -1, -1, dtype=torch.float64)  # ascending bin j -> k = K-1-j
        bin_probability = gamma**denoising_index
        bin_probability = bin_probability / bin_probability.sum()
        widths = (edges[1:] - edges[:-1]).to(torch.float64)
        self._probabilities = torch.repeat_interleave(bin_probability / widths, widths.long())
        self.bin_probabilities = bin_probability.flip(0)  # indexed by k, denoising order


def make_timestep_sampler(
    name: str, num_train_timesteps: int, *, gamma: float = 0.9, bins: int = 50
) -> TimestepSampler:
    """``uniform`` or ``gamma`` (the paper's Cat(gamma^k) over ``bins`` bins)."""
    if name == "uniform":
        return UniformSampler(num_train_timesteps)
    if name == "gamma":
        return GammaBinnedSampler(num_train_timesteps, gamma, bins)
    raise ValueError(f"unknown timestep sampler {name!r}; valid: gamma, uniform")


# Reward-scale schedules: lambda(t) for every t, from the noise schedule's alphas_cumprod.
_REWARD_SCALES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}


def register_reward_scale(name: str) -> Callable:
    """Decorator adding a schedule ``fn(alphas_cumprod (T,) float64) -> lambda (T,)`` to the registry."""

    def decorate(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        if name in _REWARD_SCALES:
            raise ValueError(f"reward scale {name!r} is already registered")
        _REWARD_SCALES[name] = fn
        return fn

    return decorate


def reward_scale_names() -> list[str]:
    return sorted(_REWARD_SCALES)


def reward_scale(name: str, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """lambda(t) for every t in [0, T) under the named schedule (float32, shape (T,))."""
    if name not in _REWARD_SCALES:
        raise ValueError(f"unknown reward scale {name!r}; valid: {', '.join(reward_scale_names())}")
    alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    if alphas_cumprod.dim() != 1 or len(alphas_cumprod) < 2:
        raise ValueError("alphas_cumprod must be 1-D with at least two timesteps")
    return _REWARD_SCALES[name](alphas_cumprod).to(torch.float32)


@register_reward_scale("constant")
def _constant(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(alphas_cumprod)


@register_reward_scale("inv-sqrt-snr")
def _inv_sqrt_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """SNR = abar / (1 - abar), so 1/sqrt(SNR) = sqrt((1 - abar) / abar); min-max over t.

    Zero terminal SNR (abar = 0 at the last t, as rescaled schedules have): 1/sqrt(SNR) is
    infinite there. Rule: the min-max runs over the finite values, and a t whose SNR is zero
    gets the noisy end's scale, 2 (it is noisier than every finite one)."""
    finite = alphas_cumprod > 0
    if not finite.any():
        return torch.full_like(alphas_cumprod, 2.0)
    inv_sqrt_snr = torch.sqrt((1.0 - alphas_cumprod[finite]) / alphas_cumprod[finite])
    low, high = inv_sqrt_snr.min(), inv_sqrt_snr.max()
    scale = torch.full_like(alphas_cumprod, 2.0)
    scale[finite] = 1.0 if high <= low else 1.0 + (inv_sqrt_snr - low) / (high - low)
    return scale
