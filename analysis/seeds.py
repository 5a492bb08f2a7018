"""Runs grouped by training seed, and effects with intervals that include seed-to-seed variation.

A *family* is a plan entry (``refdpo``); its runs are ``refdpo-seed0``, ``refdpo-seed1``, ... (the
names ``refbench reproduce --seeds N`` and the sweep's seed axis give), or, for a single run
trained outside the reproduction, the run of that name itself (one seed). ``base`` has no
training seed: it is paired with every seed of the other side.

Comparisons of two families pair run A-seed k with B-seed k (same training seed: same data
order, noise and timesteps during training) and, inside that, samples by (prompt, evaluation
seed); the per-seed paired values go to ``refbench.method.inference`` (``crossed``, ``seed_t``:
the claims, the tables and the figures), whose intervals keep their coverage with 3 and 5 seeds
(``benchmarks/coverage.md``); ``compare`` and ``seed_level`` keep the earlier hierarchical
bootstrap, which covers 0.77-0.87 at a nominal 0.95 there, for comparison only.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pandas as pd

from refbench.evaluation.winrates import paired_scores
from refbench.method.hierarchical import HierarchicalEstimate, hierarchical_bootstrap
from refbench.method.inference import Interval, crossed_interval, t_interval
from refbench.method.winrate import outcomes

from . import reads

__all__ = ["family_runs", "families", "compare", "crossed", "score_estimate", "seed_level", "seed_t", "fmt", "per_seed"]

BASE = "base"


def family_runs(db, family: str) -> dict[int, str]:
    """{training seed index: run} of a family; {} when it has no run (``base`` counts as seed 0)."""
    names = _run_names(db)
    pattern = re.compile(re.escape(family) + r"-seed(\d+)$")
    seeded = {int(m.group(1)): name for name in names if (m := pattern.match(name))}
    if seeded:
        return dict(sorted(seeded.items()))
    if family in names or family == BASE:
        return {0: family}
    return {}


def families(db, names: list[str]) -> dict[str, list[str]]:
    """family -> its runs in seed order, for the families that have runs."""
    out = {}
    for family in names:
        runs = list(family_runs(db, family).values())
        if runs:
            out[family] = runs
    return out


def _run_names(db) -> set[str]:
    store = reads.open_store(db)
    names = set(store.query("SELECT name FROM runs")["name"])
    if not store.query("SELECT 1 FROM samples WHERE run = ? LIMIT 1", [BASE]).empty:
        names.add(BASE)
    return names


def _pairs(db, a: str, b: str) -> list[tuple[str, str]]:
    """(run of A, run of B) per shared training seed; a single-run side (base) pairs with every seed."""
    runs_a, runs_b = family_runs(db, a), family_runs(db, b)
    if not runs_a or not runs_b:
        raise LookupError(a if not runs_a else b)
    if len(runs_a) == 1 and len(runs_b) > 1:
        return [(runs_a[min(runs_a)], run) for run in runs_b.values()]
    if len(runs_b) == 1 and len(runs_a) > 1:
        return [(run, runs_b[min(runs_b)]) for run in runs_a.values()]
    shared = sorted(set(runs_a) & set(runs_b))
    if not shared:
        raise LookupError(f"a training seed shared by {a} and {b}")
    return [(runs_a[k], runs_b[k]) for k in shared]


def compare(
    db,
    a: str,
    b: str,
    *,
    metric: str = "human",
    kind: str = "difference",
    prompt_set: str = "toy-test",
    metrics_for_win: list[str] | None = None,
    resamples: int = 2000,
) -> HierarchicalEstimate:
    """A against B over training seeds: ``difference`` = mean score of A minus B (paired samples);
    ``win`` = A's win rate (ties half), averaged over ``metrics_for_win`` when given."""
    return hierarchical_bootstrap(
        _common_keys(_paired_groups(db, a, b, kind, metric, prompt_set, metrics_for_win)), resamples=resamples
    )


def _paired_groups(db, a, b, kind, metric, prompt_set, metrics_for_win) -> list[pd.Series]:
    """Per training seed, the paired values indexed by (prompt, evaluation seed)."""
    from refbench.evaluation.metrics import get_metric

    if kind not in ("difference", "win"):
        raise ValueError(f"unknown comparison {kind!r}; valid: difference, win")
    store = reads.open_store(db)
    groups = []
    for run_a, run_b in _pairs(db, a, b):
        per_metric = []
        for name in (metrics_for_win or [metric]) if kind == "win" else [metric]:
            pairs = paired_scores(store, run_a, run_b, prompt_set, name)
            if pairs.empty:
                raise LookupError(f"{name} scores of {run_a} and {run_b}")
            better = get_metric(name).higher_is_better
            values = (
                outcomes(pairs["run_value"], pairs["baseline_value"], higher_is_better=better)
                if kind == "win"
                else (1.0 if better else -1.0) * (pairs["run_value"].to_numpy() - pairs["baseline_value"].to_numpy())
            )
            per_metric.append(pd.Series(values, index=pd.MultiIndex.from_frame(pairs[["prompt", "seed"]])))
        groups.append(pd.concat(per_metric, axis=1).mean(axis=1))
    return groups


def crossed(
    db,
    a: str,
    b: str,
    *,
    metric: str = "human",
    kind: str = "difference",
    prompt_set: str = "toy-test",
    metrics_for_win: list[str] | None = None,
    null: float | None = None,
) -> Interval:
    """``compare``'s effect with the interval of ``refbench.method.inference`` (chosen by
    ``benchmarks/coverage.md``): prompts shared by every training seed, crossed with the seeds; its
    p-value tests ``null`` (0 for a difference, 0.5 for a win rate). With one training seed, a t
    interval over the prompts' means: a claim about that seed's model only."""
    groups = _paired_groups(db, a, b, kind, metric, prompt_set, metrics_for_win)
    null = (0.5 if kind == "win" else 0.0) if null is None else null
    estimate = _seeds_by_prompts([g - null for g in groups])
    low, high = estimate.ci_low + null, estimate.ci_high + null
    if kind == "win":  # a rate's interval stays in [0, 1] (clipping changes no coverage)
        low, high = max(low, 0.0), min(high, 1.0)
    return replace(estimate, effect=estimate.effect + null, ci_low=low, ci_high=high)


def score_estimate(db, family: str, *, metric: str = "human", prompt_set: str = "toy-test") -> Interval:
    """A family's mean score, its interval over training seeds crossed with the shared prompts
    (``crossed_interval``; one seed: t over its prompts' means)."""
    runs = list(family_runs(db, family).values())
    if not runs:
        raise LookupError(family)
    store = reads.open_store(db)
    groups = []
    for run in runs:
        frame = store.query(
            "SELECT prompt, seed, value FROM scores JOIN samples USING (sample_id) WHERE run = ? AND prompt_set = ? "
            "AND metric = ? ORDER BY prompt, seed",
            [run, prompt_set, metric],
        )
        if frame.empty:
            raise LookupError(f"{metric} scores of {run}")
        groups.append(frame.set_index(["prompt", "seed"])["value"])
    return _seeds_by_prompts(groups)


def _seeds_by_prompts(groups: list[pd.Series]) -> Interval:
    """The mean of per-seed values keyed (prompt, evaluation seed), on the keys every seed has, with
    ``crossed_interval`` over the (training seed x prompt) means; one seed: t over its prompts."""
    shared = sorted(set.intersection(*(set(g.index) for g in groups)))
    if not shared:
        raise LookupError("(prompt, seed) samples shared by every training seed")
    cells = np.stack([g.loc[shared].groupby(level=0).mean().to_numpy() for g in groups])
    if cells.shape[0] >= 2 and cells.shape[1] >= 2:
        estimate = crossed_interval(cells)
    elif cells.size >= 2:
        estimate = replace(t_interval(cells.ravel()), method="t over prompts (one training seed)")
    else:
        estimate = _point(float(cells.mean()))
    return replace(estimate, seeds=len(groups), samples=len(shared))


def _common_keys(groups: list[pd.Series]) -> list[np.ndarray]:
    """Each seed's values on the (prompt, evaluation seed) keys every seed has, in one order: the same
    evaluation set for every training seed (a seed evaluated on more samples is not weighted more)."""
    shared = set.intersection(*(set(g.index) for g in groups))
    if not shared:
        raise LookupError("(prompt, seed) samples shared by every training seed")
    keys = sorted(shared)
    return [g.loc[keys].to_numpy() for g in groups]


def seed_level(values: list[float], *, resamples: int = 2000) -> HierarchicalEstimate:
    """An effect measured once per training seed (a divergence, a margin): seeds are the only level."""
    return hierarchical_bootstrap([[v] for v in values], resamples=resamples)


def seed_t(values: list[float]) -> Interval:
    """An effect measured once per training seed: Student's t over the seeds (n - 1 df). One value has
    no interval: the point, with no p-value (NaN), so it stays out of a multiplicity correction."""
    if len(values) >= 2:
        return t_interval(values)
    return _point(float(values[0]))


def _point(value: float) -> Interval:
    return Interval(
        effect=value,
        ci_low=value,
        ci_high=value,
        se=0.0,
        df=0.0,
        p_value=float("nan"),
        seeds=1,
        samples=1,
        method="one value (no interval)",
    )


def fmt(estimate: HierarchicalEstimate | Interval, scale: float = 1.0, digits: int = 3, percent: bool = False) -> str:
    """'0.012 [0.004, 0.020]' (or in % for rates)."""
    factor = 100.0 if percent else scale
    d = 1 if percent else digits
    unit = "%" if percent else ""
    return (
        f"{factor * estimate.effect:.{d}f}{unit} [{factor * estimate.ci_low:.{d}f}, {factor * estimate.ci_high:.{d}f}]"
    )


def per_seed(db, family: str, value_of) -> list[float]:
    """``value_of(run)`` for each run of a family, in seed order (LookupError when it has none)."""
    runs = list(family_runs(db, family).values())
    if not runs:
        raise LookupError(family)
    return [value_of(run) for run in runs]
