"""Win rates from the store: pairing by (prompt, seed), whatever order the rows came in."""

import pytest

from refbench.errors import RefbenchError
from refbench.evaluation.generate import prompt_texts, sample_id
from refbench.evaluation.winrates import compute_winrates
from refbench.store import Store


def add(store, run, prompts_and_scores):
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
            for p, s, _ in prompts_and_scores
        ],
    )
    store.upsert(
        "scores",
        [
            {"sample_id": sample_id(run, "toy-test", p, s), "metric": "human", "value": v}
            for p, s, v in prompts_and_scores
        ],
    )


def test_pairs_by_prompt_and_seed_in_any_order(tmp_path):
    """Prompts a, b, c (seeds 0, 1): run scores a0 .9, a1 .2, b0 .5, b1 .5, c0 .1, c1 .8 and baseline
    a0 .1, a1 .3, b0 .5, b1 .4, c0 .2, c1 .7: outcomes win, loss, tie, win, loss, win -> 3.5 / 6 = 0.5833.
    The baseline's rows are written in reverse order; pairing must not care."""
    a, b, c = prompt_texts("toy-test")[:3]
    store = Store(tmp_path / "db.duckdb")
    add(store, "mine", [(a, 0, 0.9), (a, 1, 0.2), (b, 0, 0.5), (b, 1, 0.5), (c, 0, 0.1), (c, 1, 0.8)])
    add(store, "base", list(reversed([(a, 0, 0.1), (a, 1, 0.3), (b, 0, 0.5), (b, 1, 0.4), (c, 0, 0.2), (c, 1, 0.7)])))
    [result] = compute_winrates(
        "mine",
        "base",
        db=tmp_path / "db.duckdb",
        out_root=tmp_path,
        metrics=["human"],
        seeds=2,
        num_prompts=3,
        resamples=500,
    )
    assert result.n == 6 and result.rate == pytest.approx(3.5 / 6)
    assert result.mean_run == pytest.approx(3.0 / 6) and result.mean_baseline == pytest.approx(2.2 / 6)
    stored = store.query("select run, baseline, metric, n, rate from winrates")
    assert stored.values.tolist() == [["mine", "base", "human", 6, pytest.approx(3.5 / 6)]]


def test_missing_samples_or_scores_say_which_command_to_run(tmp_path):
    a, b = prompt_texts("toy-test")[:2]
    store = Store(tmp_path / "db.duckdb")
    add(store, "mine", [(a, 0, 0.9), (b, 0, 0.1)])
    add(store, "base", [(a, 0, 0.5)])
    with pytest.raises(
        RefbenchError,
        match=r"base has 1 of 2 samples on toy-test: run `refbench generate base --prompts toy-test --num-prompts 2`",
    ):
        compute_winrates("mine", "base", db=tmp_path / "db.duckdb", out_root=tmp_path, metrics=["human"], num_prompts=2)
    with pytest.raises(RefbenchError, match=r"mine lacks colour scores: run `refbench score mine --metrics colour`"):
        compute_winrates(
            "mine", "base", db=tmp_path / "db.duckdb", out_root=tmp_path, metrics=["colour"], num_prompts=2
        )
