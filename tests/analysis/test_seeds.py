"""Runs grouped by training seed (analysis.seeds), and the three verdicts on a two-seed store built by
hand: family a beats b by 0.1 under seed 0 and loses by 0.1 under seed 1."""

from __future__ import annotations

import math

import pytest

from analysis import claims, figures, seeds
from refbench.evaluation.generate import prompt_texts, sample_id
from refbench.store import Store

PROMPTS = prompt_texts("toy-test")[:2]


def add_run(store, run, values, *, with_run_row=True, extra_seed=False):
    """``values`` for (prompt 0, seed 0), (prompt 1, seed 0) of the ``human`` metric; ``extra_seed`` adds an
    evaluation seed 1 sample that no other run has."""
    if with_run_row:
        store.upsert("runs", [{"name": run, "method": "diff-dpo", "status": "finished", "seed": 0}])
    keys = [(PROMPTS[0], 0), (PROMPTS[1], 0)] + ([(PROMPTS[0], 1)] if extra_seed else [])
    values = list(values) + ([0.99] if extra_seed else [])
    store.upsert(
        "samples",
        [
            {
                "sample_id": sample_id(run, "toy-test", p, s),
                "run": run,
                "prompt_set": "toy-test",
                "prompt": p,
                "seed": s,
                "image_path": "x.png",
            }
            for p, s in keys
        ],
    )
    store.upsert(
        "scores",
        [
            {"sample_id": sample_id(run, "toy-test", p, s), "metric": "human", "value": v}
            for (p, s), v in zip(keys, values)
        ],
    )


@pytest.fixture
def two_seeds(tmp_path):
    store = Store(tmp_path / "db.duckdb")
    add_run(store, "a-seed0", [0.6, 0.6], extra_seed=True)  # the extra sample is left out: b has none
    add_run(store, "a-seed1", [0.4, 0.4])
    add_run(store, "b-seed0", [0.5, 0.5])
    add_run(store, "b-seed1", [0.5, 0.5])
    add_run(store, "single", [0.7, 0.7])
    add_run(store, "base", [0.45, 0.55], with_run_row=False)  # base has samples, not a run row
    return store


def test_families_find_seeded_runs_single_runs_and_base(two_seeds):
    assert seeds.family_runs(two_seeds, "a") == {0: "a-seed0", 1: "a-seed1"}
    assert seeds.family_runs(two_seeds, "a-seed1") == {0: "a-seed1"}  # a run's own name is a family of one
    assert seeds.family_runs(two_seeds, "single") == {0: "single"}
    assert seeds.family_runs(two_seeds, "base") == {0: "base"}
    assert seeds.family_runs(two_seeds, "nobody") == {}
    assert seeds.families(two_seeds, ["a", "nobody", "single"]) == {"a": ["a-seed0", "a-seed1"], "single": ["single"]}


def test_seeds_that_disagree_are_inconclusive(two_seeds):
    """Paired differences: seed 0 (0.6 - 0.5) = 0.1 on both samples, seed 1 (0.4 - 0.5) = -0.1. A resample is
    the mean of two seeds drawn with replacement: -0.1, 0 or 0.1 (1/4, 1/2, 1/4), so the interval is
    [-0.1, 0.1] around the effect 0: inconclusive, where a single seed would have said holds (seed 0)
    or contradicted (seed 1). Win rates: seed 0 wins both pairs, seed 1 loses both: 50% [0, 100]."""
    difference = seeds.compare(two_seeds, "a", "b")
    assert difference.effect == pytest.approx(0.0, abs=1e-12)
    assert (difference.ci_low, difference.ci_high) == pytest.approx((-0.1, 0.1))
    assert (difference.seeds, difference.samples) == (2, 2)
    win = seeds.compare(two_seeds, "a", "b", kind="win")
    assert (win.effect, win.ci_low, win.ci_high) == pytest.approx((0.5, 0.0, 1.0))
    checks = claims._Checks(two_seeds, "toy-test")
    assert checks.better("a", "b")[2] == "inconclusive"
    assert checks.better("a-seed0", "b-seed0")[2] == "holds"
    assert checks.better("a-seed1", "b-seed1")[2] == "contradicted"


def test_a_single_run_is_paired_with_every_seed(two_seeds):
    """single (0.7) against a: seed 0 0.7 - 0.6 = 0.1, seed 1 0.7 - 0.4 = 0.3; effect 0.2, interval the range
    [0.1, 0.3]. base (0.45, 0.55) against a: seed 0 differences 0.15, 0.05; seed 1 -0.05, -0.15."""
    estimate = seeds.compare(two_seeds, "single", "a")
    assert estimate.effect == pytest.approx(0.2)
    assert (estimate.ci_low, estimate.ci_high) == pytest.approx((0.1, 0.3))
    assert seeds.compare(two_seeds, "a", "base").seed_means == pytest.approx((0.1, -0.1))


def test_score_estimate_uses_the_samples_every_seed_has(two_seeds):
    """a-seed0's extra sample (0.99, evaluation seed 1) is not in a-seed1: left out, so the seed means are
    0.6 and 0.4 and the effect 0.5 (with it, seed 0 would weigh 3 samples against 2). The interval
    crosses seeds with the 2 prompts, as in the test below: cells [[0.6, 0.6], [0.4, 0.4]], MS_S = 2 x
    (0.1^2 + 0.1^2) / 1 = 0.04, MS_P = MS_SP = 0, se = sqrt(0.04 / 4) = 0.1, so 0.5 +- 12.706205 x 0.1."""
    estimate = seeds.score_estimate(two_seeds, "a")
    assert estimate.effect == pytest.approx(0.5) and (estimate.seeds, estimate.samples) == (2, 2)
    assert (estimate.ci_low, estimate.ci_high) == pytest.approx((0.5 - 1.270620, 0.5 + 1.270620), abs=1e-6)
    with pytest.raises(LookupError):
        seeds.score_estimate(two_seeds, "nobody")


def test_crossed_intervals_cross_seeds_with_prompts(two_seeds):
    """a - b per (seed, prompt): [[0.1, 0.1], [-0.1, -0.1]]. Grand mean 0; MS_S = 2 (0.1^2 + 0.1^2) / 1 = 0.04,
    MS_P = MS_SP = 0, so se = sqrt(0.04 / 4) = 0.1 and the interval 0 +- t(0.975, 1) 0.1 = +-1.270620 (the
    bootstrap's [-0.1, 0.1] claimed a precision two seeds do not have); p = 1. One seed (a-seed0 against
    b-seed0): a t over its 2 prompts, both 0.1: [0.1, 0.1], p = 0. Win rates: outcomes - 0.5 are
    [[0.5, 0.5], [-0.5, -0.5]]: 50% +- 12.706 x 0.5, clipped to [0, 1]."""
    difference = seeds.crossed(two_seeds, "a", "b")
    assert difference.effect == pytest.approx(0.0, abs=1e-12)
    assert (difference.ci_low, difference.ci_high) == pytest.approx((-1.270620, 1.270620), abs=1e-6)
    assert difference.p_value == pytest.approx(1.0) and (difference.seeds, difference.samples) == (2, 2)
    one = seeds.crossed(two_seeds, "a-seed0", "b-seed0")
    assert (one.ci_low, one.ci_high, one.p_value) == pytest.approx((0.1, 0.1, 0.0))
    win = seeds.crossed(two_seeds, "a", "b", kind="win")
    assert (win.effect, win.ci_low, win.ci_high) == pytest.approx((0.5, 0.0, 1.0))
    assert seeds.seed_t([0.1, 0.2, 0.6]).ci_low == pytest.approx(-0.357241, abs=1e-6)
    assert math.isnan(seeds.seed_t([0.3]).p_value)


def test_missing_families_and_seeds_are_lookup_errors(two_seeds):
    with pytest.raises(LookupError):
        seeds.compare(two_seeds, "a", "nobody")
    with pytest.raises(ValueError, match="unknown comparison"):
        seeds.compare(two_seeds, "a", "b", kind="ratio")


def test_plot_samples_grid_is_one_row_per_prompt_and_seed_and_one_column_per_run(tmp_path):
    """Two runs with real 16 px PNGs on 3 shared (prompt, seed) pairs: --num 2 takes the first and the last
    (evenly spaced), the columns are the runs' names, the rows' labels the prompts."""
    import numpy as np
    from PIL import Image

    store = Store(tmp_path / "db.duckdb")
    keys = [(PROMPTS[0], 0), (PROMPTS[0], 1), (PROMPTS[1], 0)]
    for run, level in (("x-seed0", 50), ("y-seed0", 200)):
        store.upsert("runs", [{"name": run, "method": "diff-dpo", "status": "finished", "seed": 0}])
        rows = []
        for index, (prompt, seed) in enumerate(keys):
            path = tmp_path / run / f"{index}.png"
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(np.full((16, 16, 3), level, dtype=np.uint8)).save(path)
            rows.append(
                {
                    "sample_id": sample_id(run, "toy-test", prompt, seed),
                    "run": run,
                    "prompt_set": "toy-test",
                    "prompt": prompt,
                    "seed": seed,
                    "image_path": str(path),
                }
            )
        store.upsert("samples", rows)
    figure = figures.plot_samples(store, ["x", "y"], num=2, out=tmp_path / "grid.png")
    axes = figure.axes
    assert len(axes) == 4 and [a.get_title() for a in axes[:2]] == ["x", "y"]
    assert [a.get_ylabel() for a in axes[::2]] == [f"{PROMPTS[0]}\n(seed 0)", f"{PROMPTS[1]}\n(seed 0)"]
    assert axes[1].images[0].get_array()[0, 0, 0] == 200  # column y shows y's image
    assert (tmp_path / "grid.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="no run of 'x' with training seed 3"):
        figures.plot_samples(store, ["x"], training_seed=3)


def test_a_no_effect_claim_is_an_equivalence_test():
    """Margin 0.010, Student t with 10 df (t_{0.975,10} = 2.228, t_{0.995,10} = 3.169).
    - effect 0.002, SE 0.002: the one-sided t's are (0.002 + 0.010)/0.002 = 6 and (0.002 - 0.010)/0.002 = -4;
      |-4| > 3.169, so both p < 0.005: equivalent, the claim holds.
    - effect 0.008, SE 0.004: (0.008 - 0.010)/0.004 = -0.5, p about 0.31: not shown; the 95% interval
      0.008 +- 2.228 x 0.004 = [-0.0009, 0.0169] reaches inside the margin: inconclusive.
    - effect 0.030, interval [0.020, 0.040]: wholly beyond the margin: contradicted.
    With a Holm-adjusted p of 0.2 the first is inconclusive; adjusted 0.01, it holds."""
    from analysis.claims import _Equivalent, _part_p, _part_verdict
    from refbench.method.inference import Interval

    def interval(effect, se, low=None, high=None):
        half = 2.228 * se
        return Interval(
            effect,
            effect - half if low is None else low,
            effect + half if high is None else high,
            se,
            10,
            float("nan"),
            3,
            84,
            "test",
        )

    margin = _Equivalent(0.010)
    inside, unsure, beyond = interval(0.002, 0.002), interval(0.008, 0.004), interval(0.030, 0.0045, 0.020, 0.040)
    assert _part_p(inside, margin) < 0.005 and 0.25 < _part_p(unsure, margin) < 0.40
    assert [_part_verdict(e, margin) for e in (inside, unsure, beyond)] == ["holds", "inconclusive", "contradicted"]
    assert _part_verdict(inside, margin, p=0.2) == "inconclusive" and _part_verdict(inside, margin, p=0.01) == "holds"
