"""Preference losses on per-sample denoising errors. Pure math: tensors in, tensors out.

Notation follows the official Diffusion-DPO code (SalesforceAIResearch/DiffusionDPO):
an *error* is ``mean over (C, H, W) of (prediction - target)^2`` for one image, and a
pair's winner and loser share their noise and timestep.

    model_diff = err_theta(w) - err_theta(l)
    ref_diff   = err_ref(w)   - err_ref(l)
    inside     = -0.5 * beta * lambda(t) * (model_diff - ref_diff)
    loss       = -logsigmoid(inside).mean()

The implicit reward of Eq. 6 is ``r_t(x) = -(err_theta(x) - err_ref(x))``, so the margin
``r_t(w) - r_t(l) = -(model_diff - ref_diff)`` and ``inside = 0.5 * beta * lambda * margin``.

The baselines (DSPO, Diffusion-KTO, MaPO) live in ``baseline_losses``, which builds on this module;
``objectives`` registers both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["PreferenceLoss", "diffusion_dpo_loss", "sft_loss", "per_sample_error"]


@dataclass(frozen=True)
class PreferenceLoss:
    """What a preference loss returns.

    loss:        scalar, mean over the batch (the thing to backpropagate).
    The rest is None for an objective without pairs (SFT), and then not logged.
    margin:      per pair, r_t(w) - r_t(l) (detached).
    accuracy:    share of pairs with margin > 0, in [0, 1] (ties count as wrong); a 0-dim tensor on the
                 batch's device, so that computing it does not wait for a GPU (``float()`` reads it).
    reward_w/l:  per pair implicit rewards r_t(w), r_t(l) (detached).
    logits:      per pair, the argument of the loss's (log)sigmoid (detached); per image,
                 winners then losers, for Diffusion-KTO.
    """

    loss: torch.Tensor
    margin: torch.Tensor | None = None
    accuracy: torch.Tensor | None = None
    reward_w: torch.Tensor | None = None
    reward_l: torch.Tensor | None = None
    logits: torch.Tensor | None = None


def per_sample_error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every dimension but the first: one number per image."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}")
    squared = (prediction.float() - target.float()) ** 2
    return squared.reshape(squared.shape[0], -1).mean(dim=1)


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"per-sample errors must share one shape, got {shapes}")
    for name, t in tensors.items():
        if t.dim() != 1:
            raise ValueError(f"{name} must be 1-D (one error per sample), got shape {tuple(t.shape)}")


def diffusion_dpo_loss(
    model_err_w: torch.Tensor,
    model_err_l: torch.Tensor,
    ref_err_w: torch.Tensor,
    ref_err_l: torch.Tensor,
    *,
    beta: float,
    weight: torch.Tensor | float | None = None,
) -> PreferenceLoss:
    """Diffusion-DPO loss (Wallace et al. 2024, Eq. 6 of the paper) with a per-sample reward scale.

    ``weight`` is lambda(t) for each pair's timestep (``None`` = constant 1, Diffusion-DPO).
    Gradients flow only through ``model_err_*``; reference errors are treated as constants.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    _check_same_shape(model_err_w=model_err_w, model_err_l=model_err_l, ref_err_w=ref_err_w, ref_err_l=ref_err_l)
    ref_err_w, ref_err_l = ref_err_w.detach(), ref_err_l.detach()
    reward_w = -(model_err_w - ref_err_w)
    reward_l = -(model_err_l - ref_err_l)
    margin = reward_w - reward_l
    scale = 1.0 if weight is None else weight
    if isinstance(scale, torch.Tensor) and scale.shape not in ((), margin.shape):
        raise ValueError(f"weight must be a scalar or have shape {tuple(margin.shape)}, got {tuple(scale.shape)}")
    logits = 0.5 * beta * scale * margin
    loss = -F.logsigmoid(logits).mean()
    margin_detached = margin.detach()
    return PreferenceLoss(
        loss=loss,
        margin=margin_detached,
        accuracy=(margin_detached > 0).float().mean(),
        reward_w=reward_w.detach(),
        reward_l=reward_l.detach(),
        logits=logits.detach(),
    )


def sft_loss(model_err_w: torch.Tensor) -> torch.Tensor:
    """Supervised fine-tuning on winners only: the plain denoising loss, mean over the batch."""
    if model_err_w.dim() != 1:
        raise ValueError(f"model_err_w must be 1-D, got shape {tuple(model_err_w.shape)}")
    return model_err_w.mean()
