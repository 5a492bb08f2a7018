"""Win rates over paired samples, with a bootstrap confidence interval. Pure math (numpy).

A pair is one (prompt, seed): the same prompt and the same initial noise under two models.
For each pair the run *wins* (1) if its score is better than the baseline's, *loses* (0)
if worse, and a tie counts as half a win (0.5). The win rate is the mean outcome; the
95% interval is the percentile bootstrap over pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["WinRate", "outcomes", "win_rate", "bootstrap_interval", "paired_win_rate"]


@dataclass(frozen=True)
class WinRate:
    metric: str
    n: int
    rate: float
    ci_low: float
    ci_high: float
    mean_run: float
    mean_baseline: float


def outcomes(run_scores, baseline_scores, *, higher_is_better: bool = True) -> np.ndarray:
    """Per pair: 1 win, 0.5 tie, 0 loss."""
    run, base = np.asarray(run_scores, dtype=np.float64), np.asarray(baseline_scores, dtype=np.float64)
    if run.shape != base.shape or run.ndim != 1:
        raise ValueError(f"scores must be two 1-D arrays of one length, got {run.shape} and {base.shape}")
    better = run > base if higher_is_better else run < base
    return better.astype(np.float64) + 0.5 * (run == base)


def win_rate(run_scores, baseline_scores, *, higher_is_better: bool = True) -> float:
    result = outcomes(run_scores, baseline_scores, higher_is_better=higher_is_better)
    if result.size == 0:
        raise ValueError("no paired samples")
    return float(result.mean())


def bootstrap_interval(
    values, *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling with replacement)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no values to bootstrap")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def paired_win_rate(
    metric: str, run_scores, baseline_scores, *, higher_is_better: bool = True, resamples: int = 2000, seed: int = 0
) -> WinRate:
    result = outcomes(run_scores, baseline_scores, higher_is_better=higher_is_better)
    low, high = bootstrap_interval(result, resamples=resamples, seed=seed)
    return WinRate(
        metric=metric,
        n=int(result.size),
        rate=float(result.mean()),
        ci_low=low,
        ci_high=high,
        mean_run=float(np.mean(run_scores)),
        mean_baseline=float(np.mean(baseline_scores)),
    )
