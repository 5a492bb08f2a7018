"""Small-sample inference for claims judged over a few training seeds. Pure math (numpy, stdlib).

Two kinds of effect, two intervals:

- **Once per run** (a divergence, a margin, a timestep statistic): S values, one per training
  seed. ``t_interval`` is Student's t with S - 1 degrees of freedom. A bootstrap over three
  values is their range ([min, max]: all three draws pick one seed with probability
  1/27 > 2.5%), which covers the mean of normal values only 1 - 2 (1/2)^3 = 75% of the time.
- **Paired scores** over (training seed s) x (prompt p) x (evaluation seed e): every training
  seed is evaluated on the *same* prompts and evaluation seeds, so the design is crossed, not
  nested. ``crossed_interval`` averages the evaluation seeds inside each (s, p) cell, then
  treats the S x P table as a two-way random-effects layout

      y[s, p] = mu + a[s] + b[p] + c[s, p],   Var(mean) = s2_a / S + s2_b / P + s2_c / (S P)

  with mean squares MS_S (S - 1 df), MS_P (P - 1 df) and MS_SP ((S - 1)(P - 1) df). Unbiasedly,
  Var(mean) = (MS_S + MS_P - MS_SP) / (S P), split into two parts:

      v_seeds   = MS_S / (S P)                   the variance of the seed means / S (a t over
                                                 seed means), interaction included, S - 1 df
      v_prompts = max(MS_P - MS_SP, 0) / (S P)   what prompts shared by every seed add (prompts
                                                 resampled jointly across seeds), P - 1 df

  The standard error is sqrt(v_seeds + v_prompts); the half-width scales each part by the t
  quantile of its own degrees of freedom, sqrt(t_{S-1}^2 v_seeds + t_{P-1}^2 v_prompts)
  (Banerjee's construction for a sum of independent variance estimates, conservative by design).
  With three seeds and no prompt effect it is the t interval over seed means; with no seed
  effect the seed part still carries t_{S-1}, which is the price of not knowing that.

Why this one: ``benchmarks/coverage.py`` simulates paired data with the variance components
measured in ``results/data/`` and counts how often each nominal 95% interval holds the true
effect (``benchmarks/coverage.md``, 2,000 replicates a row). Today's hierarchical bootstrap
(seeds, then samples independently inside each seed) covers 0.77-0.87 at 3 and 5 seeds; a crossed
bootstrap resampling seeds and prompts jointly falls to 0.84 at 3 seeds when seeds differ (a
bootstrap over 3 seed means is too narrow by sqrt(2/3) and uses normal, not t_2, quantiles); a
t interval over seed means alone misses the prompts' variance (0.70 at 5 seeds); one t quantile
on the unbiased variance with Satterthwaite's degrees of freedom sits at the edge (0.933 +- 0.006
at 3 seeds and between-seed SD 0.02; 0.921 in a separate 6,000-replicate run: its estimated
degrees of freedom are largest when MS_S happens to be small). The construction here covers
0.957-0.982 in every row, at the price of intervals up to 1.3 times Satterthwaite's width with 3
seeds (1.04-1.08 with 5).

For p-values, equivalence tests and detectable effects a crossed interval reports an effective
degrees of freedom df, the one with t_{0.975, df} se = the 95% half-width, so p < 0.05 exactly
when the 95% interval excludes 0.

The rest: ``holm`` (step-down adjusted p-values over a family of claims), ``tost`` (two one-sided
tests: is the effect inside +-margin?) and ``minimum_detectable_effect`` ((t_{1-a/2} + t_power) SE,
the usual approximation that ignores the non-central t). Student's t distribution function is
computed here from the regularised incomplete beta function (a continued fraction), so that the
package's math needs no scipy; the tests check it against closed forms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np

__all__ = [
    "Interval",
    "t_cdf",
    "t_quantile",
    "t_interval",
    "crossed_interval",
    "two_sided_p",
    "holm",
    "Equivalence",
    "tost",
    "minimum_detectable_effect",
]


@dataclass(frozen=True)
class Interval:
    effect: float
    ci_low: float
    ci_high: float
    se: float
    df: float  # degrees of freedom of the t quantile (math.inf: normal)
    p_value: float  # two-sided, against 0
    seeds: int
    samples: int  # paired samples per seed (1: once per run)
    method: str


# -- Student's t ----------------------------------------------------------------------------------
def _beta_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` > 0 degrees of freedom (math.inf: the normal)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isinf(df):
        return NormalDist().cdf(t)
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (bisection on ``t_cdf``)."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if math.isinf(df):
        return NormalDist().inv_cdf(p)
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, high * 2.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low <= 1e-13 * max(1.0, high):
            break
    return 0.5 * (low + high)


def two_sided_p(effect: float, se: float, df: float) -> float:
    """Two-sided p-value of effect / se against 0 (1 when both are 0; 0 for an exact nonzero effect)."""
    if se <= 0:
        return 1.0 if effect == 0 else 0.0
    return min(1.0, 2.0 * t_cdf(-abs(effect) / se, df))


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _interval(effect, se, df, confidence, seeds, samples, method) -> Interval:
    half = t_quantile(0.5 + confidence / 2, df) * se
    return Interval(
        effect=float(effect),
        ci_low=float(effect - half),
        ci_high=float(effect + half),
        se=float(se),
        df=float(df),
        p_value=two_sided_p(float(effect), float(se), df),
        seeds=seeds,
        samples=samples,
        method=method,
    )


# -- intervals --------------------------------------------------------------------------------------
def t_interval(values, *, confidence: float = 0.95) -> Interval:
    """Student's t interval of the mean of ``values`` (one per training seed), n - 1 degrees of freedom."""
    values = np.asarray(values, dtype=np.float64).ravel()
    _check_confidence(confidence)
    if values.size < 2:
        raise ValueError(f"a t interval needs at least 2 values, got {values.size}")
    if not np.all(np.isfinite(values)):
        raise ValueError("values must be finite")
    se = float(values.std(ddof=1) / math.sqrt(values.size))
    return _interval(values.mean(), se, values.size - 1, confidence, int(values.size), 1, "t over seeds")


def crossed_interval(values, *, confidence: float = 0.95) -> Interval:
    """Interval of the mean of paired values laid out (training seed, prompt[, evaluation seed]).

    Every training seed must hold the same prompts and evaluation seeds in the same order (the
    evaluation protocol is pinned). See the module docstring for the standard error, the
    half-width and the effective degrees of freedom.
    """
    cube = np.asarray(values, dtype=np.float64)
    _check_confidence(confidence)
    if cube.ndim == 2:
        cube = cube[:, :, None]
    if cube.ndim != 3 or 0 in cube.shape:
        raise ValueError(f"values must be (seeds, prompts[, evaluation seeds]), got shape {np.shape(values)}")
    if not np.all(np.isfinite(cube)):
        raise ValueError("values must be finite")
    seeds, prompts, evals = cube.shape
    if seeds < 2 or prompts < 2:
        raise ValueError(f"a crossed interval needs at least 2 training seeds and 2 prompts, got {seeds} and {prompts}")
    cells = cube.mean(axis=2)
    grand = float(cells.mean())
    seed_means, prompt_means = cells.mean(axis=1), cells.mean(axis=0)
    ms_s = prompts * float(((seed_means - grand) ** 2).sum()) / (seeds - 1)
    ms_p = seeds * float(((prompt_means - grand) ** 2).sum()) / (prompts - 1)
    residual = cells - seed_means[:, None] - prompt_means[None, :] + grand
    ms_sp = float((residual**2).sum()) / ((seeds - 1) * (prompts - 1))
    v_seeds, v_prompts = ms_s / (seeds * prompts), max(ms_p - ms_sp, 0.0) / (seeds * prompts)
    level = 0.5 + confidence / 2
    se = math.sqrt(v_seeds + v_prompts)
    half = math.sqrt(_quantile(level, seeds - 1) ** 2 * v_seeds + _quantile(level, prompts - 1) ** 2 * v_prompts)
    df = (
        _effective_df(half / se, level, low=min(seeds, prompts) - 1, high=max(seeds, prompts) - 1)
        if se > 0
        else math.inf
    )
    return Interval(
        effect=grand,
        ci_low=grand - half,
        ci_high=grand + half,
        se=se,
        df=df,
        p_value=two_sided_p(grand, se, df),
        seeds=seeds,
        samples=prompts * evals,
        method="crossed t (seeds x prompts)",
    )


@lru_cache(maxsize=256)
def _quantile(p: float, df: float) -> float:
    return t_quantile(p, df)


def _effective_df(ratio: float, level: float, *, low: float, high: float) -> float:
    """The df in [low, high] with t_quantile(level, df) = ratio (bisection on log df; the t quantile
    falls as df grows). ``ratio`` lies between the quantiles at ``high`` and ``low`` by construction."""
    if ratio >= _quantile(level, low):
        return float(low)
    if ratio <= _quantile(level, high):
        return float(high)
    a, b = math.log(low), math.log(high)
    for _ in range(60):
        middle = 0.5 * (a + b)
        if t_cdf(ratio, math.exp(middle)) < level:  # quantile at this df above ratio: more df needed
            a = middle
        else:
            b = middle
    return math.exp(0.5 * (a + b))


# -- families, equivalence, power ------------------------------------------------------------------------
def holm(p_values, *, alpha: float = 0.05) -> tuple[list[float], list[bool]]:
    """Holm's step-down adjustment: (adjusted p-values, rejected at ``alpha``), in the input order.

    Sorted ascending, the i-th smallest of m p-values (i from 1) becomes
    max over j <= i of min(1, (m - j + 1) p_(j)); a hypothesis is rejected when its adjusted
    p-value is at most alpha (the same as stopping at the first p_(i) > alpha / (m - i + 1)).
    """
    p = [float(v) for v in p_values]
    if any(not 0 <= v <= 1 for v in p):
        raise ValueError(f"p-values must be in [0, 1], got {p}")
    order = sorted(range(len(p)), key=lambda i: p[i])
    adjusted, running = [0.0] * len(p), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[index]))
        adjusted[index] = running
    return adjusted, [a <= alpha for a in adjusted]


@dataclass(frozen=True)
class Equivalence:
    margin: float
    p_lower: float  # H0: effect <= -margin
    p_upper: float  # H0: effect >= +margin
    p_value: float  # the larger of the two
    equivalent: bool


def tost(effect: float, se: float, df: float, margin: float, *, alpha: float = 0.05) -> Equivalence:
    """Two one-sided t tests of |true effect| < ``margin``: equivalent when both reject at ``alpha``
    (the same as the 1 - 2 alpha interval lying inside (-margin, margin))."""
    if margin <= 0:
        raise ValueError(f"the equivalence margin must be > 0, got {margin}")
    if se <= 0:
        lower, upper = float(effect <= -margin), float(effect >= margin)
    else:
        lower = 1.0 - t_cdf((effect + margin) / se, df)
        upper = t_cdf((effect - margin) / se, df)
    p = max(lower, upper)
    return Equivalence(margin=float(margin), p_lower=lower, p_upper=upper, p_value=p, equivalent=p < alpha)


def minimum_detectable_effect(se: float, df: float, *, power: float = 0.8, alpha: float = 0.05) -> float:
    """The smallest true effect a two-sided level-``alpha`` test detects with probability ``power``:
    (t_{1 - alpha/2, df} + t_{power, df}) * se."""
    if se < 0:
        raise ValueError(f"the standard error must be >= 0, got {se}")
    if not 0 < power < 1 or not 0 < alpha < 1:
        raise ValueError(f"power and alpha must be in (0, 1), got {power} and {alpha}")
    return (t_quantile(1 - alpha / 2, df) + t_quantile(power, df)) * se
