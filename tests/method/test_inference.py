"""Small-sample intervals, Holm, TOST and the minimum detectable effect (refbench.method.inference).

Expected numbers are worked out by hand in each docstring. With 2 degrees of freedom Student's
t has closed forms: F(t) = 1/2 + t / (2 sqrt(t^2 + 2)) and its quantile
q(p) = (2p - 1) / sqrt(2 p (1 - p)), so q(0.975) = 0.95 / sqrt(0.04875) = 4.302653 and
q(0.8) = 0.6 / sqrt(0.32) = 1.060660. With 1 degree of freedom (Cauchy) F(t) = 1/2 + atan(t) / pi.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from refbench.method.inference import (
    crossed_interval,
    holm,
    minimum_detectable_effect,
    t_cdf,
    t_interval,
    t_quantile,
    tost,
    two_sided_p,
)

T2_975 = 4.302653  # 0.95 / sqrt(2 * 0.975 * 0.025)
T3_975 = 3.182446  # textbook table
T2_80 = 1.060660  # 0.6 / sqrt(2 * 0.8 * 0.2)
Z_975, Z_80 = 1.959964, 0.841621


def test_t_distribution_matches_its_closed_forms():
    """df 1: F(1) = 1/2 + atan(1)/pi = 0.75, q(0.975) = tan(0.475 pi) = 12.706205. df 2: F(6) = 1/2 +
    6 / (2 sqrt 38) = 0.986664; F(-4) = 1/2 - 4 / (2 sqrt 18) = 0.028595; the quantiles above.
    Textbook table: t(0.975, 3) = 3.182446, t(0.975, 41) = 2.019541; the normal: 1.959964."""
    assert t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-12)
    assert t_quantile(0.975, 1) == pytest.approx(12.706205, abs=1e-5)
    assert t_cdf(6.0, 2) == pytest.approx(0.986664, abs=1e-6)
    assert t_cdf(-4.0, 2) == pytest.approx(0.028595, abs=1e-6)
    assert t_quantile(0.975, 2) == pytest.approx(T2_975, abs=1e-6)
    assert t_quantile(0.8, 2) == pytest.approx(T2_80, abs=1e-6)
    assert t_quantile(0.025, 2) == pytest.approx(-T2_975, abs=1e-6)
    assert t_quantile(0.975, 3) == pytest.approx(T3_975, abs=1e-6)
    assert t_quantile(0.975, 41) == pytest.approx(2.019541, abs=1e-6)
    assert t_quantile(0.975, math.inf) == pytest.approx(Z_975, abs=1e-6)
    assert t_cdf(0.0, 2.7) == 0.5


def test_t_distribution_agrees_with_scipy_where_installed():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 2.5, 4, 41, 1e5):
        for t in (-30, -2.2, -0.3, 0.0, 1.1, 8.0):
            assert t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), abs=1e-9)
        for p in (0.01, 0.2, 0.8, 0.975):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-8)


def test_t_interval_on_three_seed_values():
    """0.1, 0.2, 0.6: mean 0.3, deviations -0.2, -0.1, 0.3, sum of squares 0.14, variance 0.07,
    SE sqrt(0.07 / 3) = 0.152753; half-width 4.302653 x 0.152753 = 0.657241, so [-0.357241, 0.957241]
    (a bootstrap over the three values gives their range [0.1, 0.6]). t = 0.3 / 0.152753 = 1.963961,
    two-sided p = 1 - t / sqrt(t^2 + 2) = 1 - 1.963961 / 2.420153 = 0.188497."""
    estimate = t_interval([0.1, 0.2, 0.6])
    assert estimate.effect == pytest.approx(0.3)
    assert estimate.se == pytest.approx(0.152753, abs=1e-6)
    assert (estimate.ci_low, estimate.ci_high) == pytest.approx((-0.357241, 0.957241), abs=1e-6)
    assert estimate.df == 2 and (estimate.seeds, estimate.samples) == (3, 1)
    assert estimate.p_value == pytest.approx(0.188497, abs=1e-6)


def test_crossed_interval_by_hand():
    """3 seeds x 4 prompts, y = 3 + seed effect (-1, 0, 1) + prompt effect (-3, -1, 1, 3) + an
    interaction [[1, -1, 0, 0], [-1, 1, 0, 0], 0] (rows and columns summing to 0):

        seed 0: 0, 0, 3, 5    seed 1: -1, 3, 4, 6    seed 2: 1, 3, 5, 7

    Seed means 2, 3, 4; prompt means 0, 2, 4, 6; grand mean 3.
    MS_S = 4 (1 + 0 + 1) / 2 = 4; MS_P = 3 (9 + 1 + 1 + 9) / 3 = 20; MS_SP = 4 / (2 x 3) = 2/3.
    v_seeds = 4 / 12 = 1/3; v_prompts = (20 - 2/3) / 12 = 1.611111; se = sqrt(1.944444) = 1.394433.
    half = sqrt(4.302653^2 / 3 + 3.182446^2 x 1.611111) = sqrt(6.170942 + 16.317253) = 4.742171:
    [-1.742171, 7.742171]. Its effective degrees of freedom (t_{0.975, df} = 4.742171 / 1.394433 =
    3.400761) lie between 2 and 3."""
    cells = np.array([[0, 0, 3, 5], [-1, 3, 4, 6], [1, 3, 5, 7]], dtype=float)
    estimate = crossed_interval(cells)
    assert estimate.effect == pytest.approx(3.0)
    assert estimate.se == pytest.approx(1.394433, abs=1e-6)
    assert (estimate.ci_low, estimate.ci_high) == pytest.approx((-1.742171, 7.742171), abs=1e-5)
    assert 2 < estimate.df < 3
    assert t_quantile(0.975, estimate.df) * estimate.se == pytest.approx(4.742171, abs=1e-5)
    assert estimate.p_value == pytest.approx(two_sided_p(3.0, estimate.se, estimate.df))
    assert 0.05 < estimate.p_value < 1  # the interval holds 0
    # two evaluation seeds per cell, +-0.5 around it: the cell means, hence the interval, are the same
    cube = np.stack([cells - 0.5, cells + 0.5], axis=2)
    again = crossed_interval(cube)
    assert (again.ci_low, again.ci_high) == pytest.approx((estimate.ci_low, estimate.ci_high))
    assert (again.seeds, again.samples) == (3, 8)


def test_crossed_interval_reduces_to_the_t_over_seed_means_without_prompt_effects():
    """Every prompt has the same mean (1, 2, 3 under the three seeds, +-1 around it, the sign flipping
    with the seed so that prompt means are all 2): MS_P = 0 < MS_SP, the prompt part drops out, and
    the interval is the t interval over the seed means 1, 2, 3: 2 +- 4.302653 x sqrt(1/3)
    = 2 +- 2.484138."""
    signs = np.array([1, -1, 1, -1])
    cells = np.stack([1 + signs, 2 - 2 * signs, 3 + signs])
    assert np.allclose(cells.mean(axis=0), 2)
    estimate = crossed_interval(cells)
    assert (estimate.ci_low, estimate.ci_high) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-5)
    assert estimate.df == pytest.approx(2)
    seeds_only = t_interval(cells.mean(axis=1))
    assert (estimate.ci_low, estimate.ci_high) == pytest.approx((seeds_only.ci_low, seeds_only.ci_high))


def test_holm_on_four_p_values():
    """p = 0.01, 0.04, 0.03, 0.005 (m = 4). Sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06;
    0.04 x 1 = 0.04, raised to the running maximum 0.06. In input order: 0.03, 0.06, 0.06, 0.02;
    at 0.05 the first and last are rejected; unadjusted, all four would have been."""
    adjusted, rejected = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert rejected == [True, False, False, True]
    assert holm([]) == ([], [])
    assert holm([0.6, 0.5])[0] == [1.0, 1.0]  # 0.5 x 2 = 1.0, capped; 0.6 x 1 raised to 1.0
    with pytest.raises(ValueError, match="p-values"):
        holm([0.2, 1.5])


def test_tost_with_a_known_answer():
    """Effect 0.01, SE 0.01, 2 df, margin 0.05: p_lower = 1 - F((0.01 + 0.05) / 0.01 = 6) = 0.013336,
    p_upper = F((0.01 - 0.05) / 0.01 = -4) = 0.028595; both below 0.05: equivalent, p = 0.028595.
    Margin 0.03: p_upper = F(-2) = 1/2 - 2 / (2 sqrt 6) = 0.091752 > 0.05: not shown equivalent."""
    inside = tost(0.01, 0.01, 2, 0.05)
    assert (inside.p_lower, inside.p_upper) == pytest.approx((0.013336, 0.028595), abs=1e-6)
    assert inside.p_value == pytest.approx(0.028595, abs=1e-6) and inside.equivalent
    outside = tost(0.01, 0.01, 2, 0.03)
    assert outside.p_value == pytest.approx(0.091752, abs=1e-6) and not outside.equivalent
    with pytest.raises(ValueError, match="margin"):
        tost(0.0, 0.01, 2, 0.0)


def test_minimum_detectable_effect_from_a_standard_error():
    """SE 0.01 at 80% power, two-sided 5%: with 2 df (t_{0.975} + t_{0.8}) SE = (4.302653 + 1.060660) x
    0.01 = 0.053633; with a normal (1.959964 + 0.841621) x 0.01 = 0.028016: three seeds cost a factor
    1.91 in what a claim can detect."""
    assert minimum_detectable_effect(0.01, 2) == pytest.approx(0.053633, abs=1e-6)
    assert minimum_detectable_effect(0.01, math.inf) == pytest.approx(0.028016, abs=1e-6)
    assert minimum_detectable_effect(0.0, 2) == 0.0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        t_interval([0.3])
    with pytest.raises(ValueError, match="at least 2 training seeds"):
        crossed_interval(np.zeros((1, 42, 2)))
    with pytest.raises(ValueError, match="shape"):
        crossed_interval(np.zeros(5))
    with pytest.raises(ValueError, match="finite"):
        crossed_interval([[0.0, np.nan], [1.0, 2.0]])
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_cdf(1.0, 0)
    with pytest.raises(ValueError, match="confidence"):
        t_interval([1.0, 2.0], confidence=1.5)
