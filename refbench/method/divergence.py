"""The divergence D(model, init) of Eq. 7-8, estimated through the forward process.

    D(ref, init) = mean over (x_w, t ~ U, eps) of [err_ref(x_t) - err_init(x_t)]

Both models see the same noisy input and target. The estimate is positive when the
model's denoising error has grown relative to the initial model. The paper's scale is
unknown (its appendix is missing), so the raw value is reported and the threshold
``delta`` is a config value; this module is the one place the formula lives.
"""

from __future__ import annotations

import torch

__all__ = ["divergence", "divergence_by_bin"]


def divergence(model_err: torch.Tensor, init_err: torch.Tensor) -> torch.Tensor:
    """Scalar estimate of D(model, init) from per-sample errors on the same (x_t, t, eps)."""
    if model_err.shape != init_err.shape or model_err.dim() != 1 or model_err.numel() == 0:
        raise ValueError(
            f"expected two non-empty 1-D error tensors of one shape, got {tuple(model_err.shape)} and {tuple(init_err.shape)}"
        )
    return (model_err.detach().double() - init_err.detach().double()).mean()


def divergence_by_bin(
    model_err: torch.Tensor, init_err: torch.Tensor, timesteps: torch.Tensor, edges: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-interval divergence (Fig. 5): mean error gap and sample count in each [e_j, e_{j+1}).

    Intervals without samples get NaN and count 0.
    """
    if not (model_err.shape == init_err.shape == timesteps.shape) or model_err.dim() != 1:
        raise ValueError("model_err, init_err and timesteps must be 1-D of one shape")
    gap = model_err.detach().double() - init_err.detach().double()
    bins = torch.bucketize(timesteps, edges[1:-1].to(timesteps.dtype), right=True)
    counts = torch.bincount(bins, minlength=len(edges) - 1)
    sums = torch.zeros(len(edges) - 1, dtype=torch.float64).index_add_(0, bins, gap)
    means = torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, float("nan")))
    return means, counts
