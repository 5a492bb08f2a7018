"""The hierarchical bootstrap (training seeds, then paired samples) and the three verdicts.

Expected numbers are worked out by hand in each docstring."""

from __future__ import annotations

import numpy as np
import pytest

from refbench.method.hierarchical import hierarchical_bootstrap, verdict
from refbench.method.interval_stats import binomial_interval
from refbench.method.winrate import bootstrap_interval


def test_one_seed_reduces_to_the_paired_bootstrap():
    """With one training seed the seed draw always picks it and the sample indices come first from the
    same generator, so the interval is today's paired bootstrap's, value for value."""
    values = np.random.default_rng(3).random(84)
    estimate = hierarchical_bootstrap([values], resamples=500, seed=7)
    assert (estimate.ci_low, estimate.ci_high) == bootstrap_interval(values, resamples=500, seed=7)
    assert estimate.effect == pytest.approx(values.mean())
    assert (estimate.seeds, estimate.samples) == (1, 84)


def test_seeds_without_sample_noise_give_the_spread_of_the_seeds():
    """Seeds 0, 0, 0 and 1, 1, 1: a resample is the mean of two seeds drawn with replacement, 0, 0.5 or
    1 with probabilities 1/4, 1/2, 1/4; 1/4 > 2.5% at both ends, so the 95% interval is [0, 1], and the
    effect is the mean of the seed means, 0.5. The paired bootstrap of the six values pooled (a
    proportion of 3 in 6) is narrower: it ignores that the two seeds disagree completely."""
    estimate = hierarchical_bootstrap([[0, 0, 0], [1, 1, 1]], resamples=4000)
    assert (estimate.effect, estimate.ci_low, estimate.ci_high) == (0.5, 0.0, 1.0)
    assert estimate.seed_means == (0.0, 1.0)
    pooled = bootstrap_interval([0, 0, 0, 1, 1, 1], resamples=4000)
    assert pooled[1] - pooled[0] < 1.0


def test_three_seeds_without_sample_noise_span_the_seed_means():
    """Seeds constant at 0.1, 0.2, 0.6: all three draws pick the lowest (highest) seed with probability
    1/27 = 3.7% > 2.5%, so the interval is exactly [0.1, 0.6]; effect (0.1 + 0.2 + 0.6) / 3 = 0.3."""
    estimate = hierarchical_bootstrap([[0.1] * 5, [0.2] * 5, [0.6] * 5], resamples=4000)
    assert estimate.effect == pytest.approx(0.3)
    assert (estimate.ci_low, estimate.ci_high) == pytest.approx((0.1, 0.6))


def test_seeds_that_disagree_widen_the_interval():
    """The same within-seed noise (the values 0.5 +- 0.1, alternating), around seed means that agree
    (all 0.5) or differ (0.3, 0.5, 0.7): same effect 0.5, and the interval widens from about the
    sample noise (standard error 0.1 / sqrt(60) = 0.013) to about the spread of the seed means."""
    noise = np.array([-0.1, 0.1] * 20)
    agree = hierarchical_bootstrap([0.5 + noise] * 3)
    differ = hierarchical_bootstrap([0.3 + noise, 0.5 + noise, 0.7 + noise])
    assert agree.effect == pytest.approx(0.5) and differ.effect == pytest.approx(0.5)
    assert agree.ci_high - agree.ci_low < 0.06
    assert differ.ci_high - differ.ci_low > 0.3
    assert differ.ci_low < 0.4 < 0.6 < differ.ci_high


def test_unequal_seeds_and_bad_input_are_refused():
    with pytest.raises(ValueError, match="same number"):
        hierarchical_bootstrap([[1, 2, 3], [1, 2]])
    with pytest.raises(ValueError, match="no training seeds"):
        hierarchical_bootstrap([])
    with pytest.raises(ValueError, match="confidence"):
        hierarchical_bootstrap([[1.0]], confidence=1.5)


@pytest.mark.parametrize(
    "low, high, null, expected",
    [
        (0.01, 0.03, 0.0, "holds"),
        (-0.03, -0.01, 0.0, "contradicted"),
        (-0.01, 0.02, 0.0, "inconclusive"),
        (0.0, 0.02, 0.0, "inconclusive"),  # touching no effect is not excluding it
        (0.55, 0.70, 0.5, "holds"),
        (0.30, 0.45, 0.5, "contradicted"),
        (0.45, 0.55, 0.5, "inconclusive"),
    ],
)
def test_three_verdicts(low, high, null, expected):
    assert verdict(low, high, null=null) == expected


def test_binomial_interval_by_hand():
    """Wilson 95%, 8 of 10: z = 1.959964, z^2 = 3.841459, centre (0.8 + z^2/20) / (1 + z^2/10)
    = 0.992073 / 1.384146 = 0.716740; half-width z sqrt(0.016 + z^2/400) / 1.384146
    = 1.959964 * 0.160011 / 1.384146 = 0.226578; so [0.490162, 0.943318]."""
    assert binomial_interval(8, 10) == pytest.approx((0.490162, 0.943318), abs=2e-6)
    # 0 of 10: centre z^2/20 / (1 + z^2/10) = 0.138767, half-width the same, so [0, 0.277534]
    assert binomial_interval(0, 10) == pytest.approx((0.0, 0.277534), abs=2e-6)
    with pytest.raises(ValueError):
        binomial_interval(11, 10)
    with pytest.raises(ValueError):
        binomial_interval(0, 0)
