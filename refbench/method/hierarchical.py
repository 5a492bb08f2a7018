"""Intervals that include seed-to-seed variation: a two-level (hierarchical) bootstrap. Pure numpy.

A comparison made under S training seeds has, for seed s, n paired values v[s, i] (one per
(prompt, evaluation seed): a win outcome in {0, 0.5, 1}, or a difference in score). The effect
is the mean over seeds of the per-seed means. One bootstrap resample draws S seeds with
replacement, then, inside each drawn seed, n values with replacement, and takes the mean of all
S x n drawn values; the 95% interval is the 2.5 and 97.5 percentiles of those means.

Why two levels: the paired bootstrap over samples alone treats the training seed as fixed, so
with a single seed it cannot see that another seed would have trained a different model. Drawing
seeds first puts the spread between seeds' means into the interval: two seeds whose means differ
a lot give a wide interval however many samples each has.

Two properties the tests work out by hand:
- With one seed the seed draw always picks it, and the sample indices are drawn first from the
  same generator, so the interval equals the paired bootstrap's (``winrate.bootstrap_interval``)
  with the same seed, value for value.
- With seeds whose values are constant inside each seed (no sample noise), every resample is
  the mean of S seed means drawn with replacement: with the two seeds 0 and 1, the resample mean
  is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4, so the 95% interval is [0, 1].

Every seed must contribute the same number of values: the evaluation protocol is pinned, so a
seed with fewer samples is a run whose evaluation is incomplete, which is an error, not a weight.
With few seeds the interval is coarse (with 3 seeds and no sample noise it is the range of the
seed means, since all three draws pick one seed with probability 1/9 > 2.5%); that is the
honest answer to "would another seed agree?", not a defect to smooth over.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["HierarchicalEstimate", "hierarchical_bootstrap", "verdict"]


@dataclass(frozen=True)
class HierarchicalEstimate:
    effect: float  # mean over seeds of the per-seed means
    ci_low: float
    ci_high: float
    seeds: int
    samples: int  # values per seed
    seed_means: tuple[float, ...]


def hierarchical_bootstrap(
    groups, *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> HierarchicalEstimate:
    """Effect and percentile interval of the mean of ``groups`` (one 1-D array per training seed)."""
    values = [np.asarray(g, dtype=np.float64) for g in groups]
    if not values:
        raise ValueError("no training seeds to bootstrap")
    sizes = {v.size for v in values}
    if any(v.ndim != 1 for v in values) or len(sizes) != 1 or 0 in sizes:
        raise ValueError(
            f"every training seed needs the same number (> 0) of 1-D values; got sizes {sorted(v.size for v in values)}"
        )
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    matrix = np.stack(values)  # (S, n)
    count, size = matrix.shape
    rng = np.random.default_rng(seed)
    # Sample indices first: with S = 1 this is exactly the paired bootstrap's draw.
    inner = rng.integers(0, size, size=(resamples, count, size))
    outer = rng.integers(0, count, size=(resamples, count)) if count > 1 else np.zeros((resamples, 1), dtype=np.int64)
    means = matrix[outer[:, :, None], inner].mean(axis=(1, 2))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    seed_means = matrix.mean(axis=1)
    return HierarchicalEstimate(
        effect=float(seed_means.mean()),
        ci_low=float(low),
        ci_high=float(high),
        seeds=count,
        samples=size,
        seed_means=tuple(float(m) for m in seed_means),
    )


def verdict(ci_low: float, ci_high: float, *, null: float = 0.0) -> str:
    """'holds' when the interval lies above ``null`` (the paper's direction, effects being signed so
    that the paper's claim is positive), 'contradicted' when it lies below, else 'inconclusive'."""
    if ci_low > null:
        return "holds"
    if ci_high < null:
        return "contradicted"
    return "inconclusive"
