"""The paper-regime rules (issue 25), with numbers worked out by hand."""

from __future__ import annotations

import pytest

from refbench.experiments import regime_plan as rule
from refbench.toy.prompts import prompt_set


def test_the_regime_carries_the_papers_reuse_and_syncs():
    """Paper: 2,000 x 2,048 / 851,293 = 4,096,000 / 851,293 = 4.8115 epochs; 256 x 8 / 4.8115 =
    2,048 / 4.8115 = 425.65 -> 426 pairs. tau: 16, 32, 64 x 256 / 2,000 = 2.048, 4.096, 8.192 ->
    2, 4, 8; the paper's 62.5 syncs become 256 / 4 = 64."""
    assert rule.PAPER_EPOCHS == pytest.approx(4.8115, abs=1e-4)
    assert rule.PAIRS == 426
    assert rule.TAUS == (2, 4, 8)
    assert rule.STEPS // rule.TAUS[1] == 64 and rule.PAPER_SYNCS == 62.5


def test_validation_prompts_are_training_prompts_never_test_prompts():
    validation, train, test = (set(p.text for p in prompt_set(n)) for n in ("toy-val", "toy-train", "toy-test"))
    assert len(validation) == 42 and validation <= train and not validation & test


def test_the_curve_point_is_the_best_mean_ties_to_the_cheaper():
    """Means: (1e-5, 64) 0.55; (2e-5, 64) 0.60; (2e-5, 128) 0.60 (a tie: the shorter run wins);
    (5e-5, 64) 0.59."""
    scores = {(1e-5, 64): [0.5, 0.6], (2e-5, 64): [0.6, 0.6], (2e-5, 128): [0.62, 0.58], (5e-5, 64): [0.58, 0.60]}
    assert rule.choose_curve_point(scores) == (2e-5, 64)
    assert rule.choose_tuned([0.3, 0.5, 0.5]) == 1  # a tie goes to the earlier value


def test_one_sided_t_by_hand():
    """Differences 0.01, 0.02, 0.03: mean 0.02, sd 0.01, se 0.01 / sqrt(3) = 0.005774, t = 3.4641 on
    2 df. For 2 df, P(T <= t) = 1/2 + t / (2 sqrt(2 + t^2)) = 0.5 + 3.4641 / (2 x 3.7417) = 0.96291,
    so p = 0.03709."""
    assert rule.lower_one_sided_p([0.01, 0.02, 0.03]) == pytest.approx(0.03709, abs=1e-5)


def test_over_optimisation_needs_a_significant_drop_along_an_axis():
    """Chosen (2e-5, 128). Along the learning rate, (1e-4, 128): differences 0.01, 0.02, 0.03 (p =
    0.037 < 0.05, shown). Along the length, (2e-5, 256): differences 0.01, -0.01, 0.03, mean 0.01,
    sd 0.02, t = 0.01 / (0.02 / sqrt 3) = 0.866, p > 0.05."""
    scores = {
        (2e-5, 128): [0.60, 0.61, 0.62],
        (1e-4, 128): [0.59, 0.59, 0.59],
        (2e-5, 256): [0.59, 0.62, 0.59],
        (1e-5, 128): [0.5, 0.5, 0.5],
    }
    out = rule.over_optimisation(scores, (2e-5, 128))
    assert out["learning rate"]["point"] == (1e-4, 128) and out["learning rate"]["p"] == pytest.approx(
        0.03709, abs=1e-5
    )
    assert out["length"]["point"] == (2e-5, 256) and out["length"]["p"] > 0.05
    assert out["shown"]
    flat = {**scores, (1e-4, 128): [0.60, 0.60, 0.62]}
    assert not rule.over_optimisation(flat, (2e-5, 128))["shown"]


def test_tuning_grids_put_the_published_default_first():
    grids = rule.tuning_grids(5e-5, 0.008)
    assert [label for label, _ in grids["diff-dpo"]] == ["beta5000", "beta2500", "beta10000"]
    assert grids["dspo"][0][1] == {"method": {"beta": 0.001}}
    assert [o["training"]["learning_rate"] for _, o in grids["sft"]] == pytest.approx([5e-5, 5e-5 / 3, 1.5e-4])
    assert [o["method"] for _, o in grids["refdpo-tau"]] == [
        {"tau": 4, "delta": 0.004},
        {"tau": 2, "delta": 0.004},
        {"tau": 8, "delta": 0.004},
    ]
    assert [o["method"]["delta"] for _, o in grids["refdpo-delta"]] == pytest.approx([0.004, 0.002, 0.008])


def test_the_plan_names_are_the_paper_specs_names():
    from refbench.experiments.reproduce_plan import plan_names

    tuned = {
        "diff-dpo": {"method": {"beta": 5000.0}},
        "refdpo": {"method": {"tau": 4, "delta": 0.002}},
        **{m: {"method": {"beta": 1.0}} for m in ("dspo", "diff-kto", "mapo")},
        "sft": {"training": {"learning_rate": 1e-5}},
    }
    assert [s.name for s in rule.paper_specs(1e-5, 256, tuned)] == plan_names("paper")


def test_the_calibration_is_what_the_committed_curve_gives():
    """regime_plan.CALIBRATION is results/regime/decision.json, and that decision follows from the
    committed curve (results/regime/curve.csv) by the rule, recomputed here."""
    import json
    from pathlib import Path

    import pandas as pd

    folder = Path(__file__).resolve().parents[2] / "results" / "regime"
    decision = json.loads((folder / "decision.json").read_text())
    assert rule.CALIBRATION == {
        k: decision[k] for k in ("learning_rate", "steps", "dpo_divergence", "over_optimisation_shown")
    }
    curve = pd.read_csv(folder / "curve.csv")
    runs = curve[curve["steps"] > 0]
    scores = {(lr, steps): list(g.sort_values("seed")["human"]) for (lr, steps), g in runs.groupby(["lr", "steps"])}
    assert all(len(v) == len(rule.CURVE_SEEDS) for v in scores.values())
    assert len(scores) == len(rule.CURVE_LRS) * (len(rule.CURVE_SNAPSHOTS) + 1)
    assert rule.choose_curve_point(scores) == (decision["learning_rate"], decision["steps"])
    assert (
        rule.over_optimisation(scores, (decision["learning_rate"], decision["steps"]))["shown"]
        == decision["over_optimisation_shown"]
    )
    at = runs[(runs["lr"] == decision["learning_rate"]) & (runs["steps"] == decision["steps"])]
    assert at["div_policy"].mean() == pytest.approx(decision["dpo_divergence"])
