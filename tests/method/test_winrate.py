"""Win-rate arithmetic and the bootstrap, on cases worked out by hand."""

import numpy as np
import pytest

from refbench.method.winrate import bootstrap_interval, outcomes, paired_win_rate, win_rate


def test_wins_ties_and_losses():
    """run (3, 1, 2, 2) vs baseline (1, 2, 2, 0): win, loss, tie, win -> (1, 0, 0.5, 1), rate 2.5 / 4 = 0.625.
    When lower is better the same scores give (0, 1, 0.5, 0): 1.5 / 4 = 0.375."""
    run, base = [3, 1, 2, 2], [1, 2, 2, 0]
    assert outcomes(run, base).tolist() == [1.0, 0.0, 0.5, 1.0]
    assert win_rate(run, base) == 0.625
    assert win_rate(run, base, higher_is_better=False) == 0.375


def test_bootstrap_of_constant_outcomes_is_a_point():
    assert bootstrap_interval([1.0] * 10) == (1.0, 1.0)


def test_bootstrap_of_two_pairs():
    """Outcomes (1, 0): a resample of 2 has mean 0, 0.5 or 1 with probability 1/4, 1/2, 1/4, so
    the 2.5th and 97.5th percentiles of 2000 resampled means are 0 and 1 (the chance that no
    resample has mean 0 is 0.75^2000, nil)."""
    assert bootstrap_interval([1.0, 0.0], resamples=2000, seed=3) == (0.0, 1.0)


def test_bootstrap_interval_matches_the_normal_approximation():
    """400 outcomes, 240 wins: rate 0.6, standard error sqrt(0.6 * 0.4 / 400) = 0.0245, so the 95%
    interval is about 0.6 -+ 1.96 * 0.0245 = (0.552, 0.648)."""
    values = np.array([1.0] * 240 + [0.0] * 160)
    low, high = bootstrap_interval(values, resamples=4000, seed=0)
    assert low == pytest.approx(0.552, abs=0.01) and high == pytest.approx(0.648, abs=0.01)


def test_paired_win_rate_summary():
    result = paired_win_rate("pickscore", [2.0, 3.0], [1.0, 4.0])
    assert (result.metric, result.n, result.rate, result.mean_run, result.mean_baseline) == (
        "pickscore",
        2,
        0.5,
        2.5,
        2.5,
    )
    assert result.ci_low <= result.rate <= result.ci_high


def test_bad_inputs():
    with pytest.raises(ValueError):
        win_rate([1, 2], [1])
    with pytest.raises(ValueError, match="no paired samples"):
        win_rate([], [])
