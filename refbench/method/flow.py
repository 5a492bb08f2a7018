"""Rectified flow (SD3 / SD3.5 class) in the trainer's timestep convention. Pure math: no I/O.

A rectified-flow model sees ``x_s = (1 - s) x0 + s eps`` at noise level ``s`` in [0, 1] and
predicts the velocity ``v = eps - x0`` (diffusers' ``FlowMatchEulerDiscreteScheduler`` and its
SD3 training script). The trainer, the samplers of timesteps, lambda(t) and the analyses all
work on an integer timestep index t in [0, T) where large t is noisy (DDPM's convention), so a
flow model gets the map

    s(t) = shift * u / (1 + (shift - 1) * u),   u = (t + 1) / T,

which is exactly the scheduler's training grid (its ``sigmas`` at construction, read in the
other order: index T-1-t): t = T-1 is pure noise (s = 1), t = 0 the least noise (s = shift/T
for small shift/T). The transformer receives ``s * T`` as its timestep, as the pipeline does.

Signal-to-noise ratio: SNR(s) = ((1 - s) / s)^2. The DDPM quantity with the same SNR is
``abar = SNR / (1 + SNR) = (1 - s)^2 / ((1 - s)^2 + s^2)`` (x_s divided by its norm
sqrt((1-s)^2 + s^2) is a variance-preserving sample at that abar), so every function of
``alphas_cumprod`` (the reward scale lambda(t), Min-SNR, the analyses) applies unchanged.
At s = 1, abar = 0: SNR is zero and 1/sqrt(SNR) infinite; ``timesteps.reward_scale`` handles
that endpoint by its stated rule (min-max over the finite values; the zero-SNR t gets 2).
"""

from __future__ import annotations

import torch

__all__ = ["shifted_sigmas", "flow_noisy", "flow_velocity", "equivalent_alphas_cumprod", "model_timesteps"]


def shifted_sigmas(num_train_timesteps: int, shift: float = 1.0) -> torch.Tensor:
    """s(t) for t = 0..T-1 (float64, ascending; s(T-1) = 1)."""
    if num_train_timesteps < 1:
        raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    u = torch.arange(1, num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
    return shift * u / (1.0 + (shift - 1.0) * u)


def _per_sample(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return sigma.to(like.device, like.dtype).view(-1, *[1] * (like.dim() - 1))


def flow_noisy(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_s = (1 - s) x0 + s eps, one s per sample."""
    s = _per_sample(sigma, x0)
    return (1.0 - s) * x0 + s * noise


def flow_velocity(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The regression target v = eps - x0 (d x_s / d s)."""
    return noise - x0


def equivalent_alphas_cumprod(sigmas: torch.Tensor) -> torch.Tensor:
    """The DDPM abar with the same SNR as each s: (1 - s)^2 / ((1 - s)^2 + s^2)."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    if (sigmas <= 0).any() or (sigmas > 1).any():
        raise ValueError("sigmas must lie in (0, 1]")
    return (1.0 - sigmas) ** 2 / ((1.0 - sigmas) ** 2 + sigmas**2)


def model_timesteps(sigmas: torch.Tensor, num_train_timesteps: int) -> torch.Tensor:
    """What the transformer is called with: s * T (StableDiffusion3Pipeline passes the
    scheduler's ``timesteps``, which are ``sigmas * num_train_timesteps``)."""
    return sigmas * num_train_timesteps
