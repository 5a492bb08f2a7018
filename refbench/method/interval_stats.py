"""Per-interval statistics of the implicit reward (the paper's Fig. 2 and Fig. 5). Pure math.

The timestep analysis evaluates every validation pair once in each of K equal intervals of
[0, T): winner and loser share one t (drawn inside the interval) and one noise. From the
per-sample denoising errors of the model, its reference and the initial model:

    r_t(x)       = -(err_model(x) - err_ref(x))                    implicit reward (Eq. 6)
    loss         = mean over w and l of err_model                  Fig. 2(a)
    reward_scale = mean over w and l of |r_t(x)|                   Fig. 2(b)
    accuracy     = mean over pairs of [r_t(w) > r_t(l)]            Fig. 2(c) (a tie is wrong)
    divergence   = mean over winners of err_model(w) - err_init(w)  D restricted to the interval (Fig. 5)

Intervals are numbered in denoising order, as the timestep sampler's bins: interval 0 is
the noisiest, [T - T/K, T).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .timesteps import bin_edges

__all__ = ["IntervalStats", "interval_bounds", "interval_statistics", "binomial_interval"]


@dataclass(frozen=True)
class IntervalStats:
    bin: int  # denoising order: 0 = noisiest
    t_low: int  # inclusive
    t_high: int  # exclusive
    n: int  # pairs
    loss: float
    reward_scale: float
    accuracy: float
    lambda_t: float  # mean lambda(t) of the pairs' timesteps
    divergence: float


def interval_bounds(num_train_timesteps: int, intervals: int) -> list[tuple[int, int]]:
    """(t_low, t_high) of each interval in denoising order (noisiest first)."""
    edges = bin_edges(num_train_timesteps, intervals).tolist()
    ascending = list(zip(edges[:-1], edges[1:]))
    return ascending[::-1]


def interval_statistics(
    *,
    interval: torch.Tensor,
    timesteps: torch.Tensor,
    model_w: torch.Tensor,
    model_l: torch.Tensor,
    ref_w: torch.Tensor,
    ref_l: torch.Tensor,
    init_w: torch.Tensor,
    lambdas: torch.Tensor,
    num_train_timesteps: int,
    intervals: int,
) -> list[IntervalStats]:
    """Aggregate per-pair errors (1-D, one entry per (pair, interval) evaluation) by interval.

    ``interval`` holds each evaluation's interval index (denoising order), ``timesteps`` its t,
    ``lambdas`` the schedule lambda(t) for every t in [0, T). Intervals without evaluations
    are left out.
    """
    values = [interval, timesteps, model_w, model_l, ref_w, ref_l, init_w]
    if len({tuple(v.shape) for v in values}) != 1 or interval.dim() != 1:
        raise ValueError("every per-pair tensor must be 1-D with one entry per evaluation")
    reward_w = -(model_w.double() - ref_w.double())
    reward_l = -(model_l.double() - ref_l.double())
    out = []
    for index, (t_low, t_high) in enumerate(interval_bounds(num_train_timesteps, intervals)):
        mask = interval == index
        count = int(mask.sum())
        if count == 0:
            continue
        out.append(
            IntervalStats(
                bin=index,
                t_low=int(t_low),
                t_high=int(t_high),
                n=count,
                loss=float(torch.cat([model_w[mask], model_l[mask]]).double().mean()),
                reward_scale=float(torch.cat([reward_w[mask], reward_l[mask]]).abs().mean()),
                accuracy=float((reward_w[mask] > reward_l[mask]).double().mean()),
                lambda_t=float(lambdas[timesteps[mask]].double().mean()),
                divergence=float((model_w[mask].double() - init_w[mask].double()).mean()),
            )
        )
    return out


def binomial_interval(successes: float, trials: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (Fig. 2's accuracy per interval of t).

    Wilson rather than the normal approximation because accuracies near 0.5-0.7 on a few hundred
    pairs are fine either way, but the normal interval leaves [0, 1] for small n or extreme
    rates. ``successes`` may be fractional (a pooled rate times n). For 8 of 10 at 95%:
    z = 1.95996, centre (0.8 + z^2/20) / (1 + z^2/10) = 0.71674, half-width
    z sqrt(0.8 * 0.2 / 10 + z^2/400) / (1 + z^2/10) = 0.22658, so [0.4902, 0.9433].
    """
    from statistics import NormalDist

    if trials <= 0:
        raise ValueError(f"trials must be > 0, got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, {trials}], got {successes}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    rate = successes / trials
    denominator = 1 + z * z / trials
    centre = (rate + z * z / (2 * trials)) / denominator
    half = z * (rate * (1 - rate) / trials + z * z / (4 * trials * trials)) ** 0.5 / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
