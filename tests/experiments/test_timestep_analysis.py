"""Per-interval statistics (pure math, by hand) and `refbench timestep-analysis` on a tiny toy run."""

import pytest
import torch
from toy_helpers import config_for

from refbench.method.interval_stats import interval_bounds, interval_statistics
from refbench.store import Store
from refbench.training.run import run_training


def test_interval_bounds_run_noisiest_first():
    """T = 10, K = 2: edges 0, 5, 10; denoising order puts [5, 10) first. T = 10, K = 3: edges
    floor(10k/3) = 0, 3, 6, 10, so the noisiest interval is [6, 10)."""
    assert interval_bounds(10, 2) == [(5, 10), (0, 5)]
    assert interval_bounds(10, 3) == [(6, 10), (3, 6), (0, 3)]


def test_interval_statistics_by_hand():
    """T = 10, K = 2, two pairs each evaluated in both intervals; lambda(t) = t / 10.

    evaluation:      0     1     2     3
    interval:        0     1     0     1
    t:               7     2     9     0
    model_w:        .3    .1    .5    .2      model_l: .4 .2 .4 .1
    ref_w:          .2    .1    .6    .2      ref_l:   .5 .3 .2 .1
    init_w:         .1    .1    .4    .3
    r_w = -(model_w - ref_w) = -.1, 0, .1, 0;   r_l = -(model_l - ref_l) = .1, .1, -.2, 0

    interval 0 (evaluations 0, 2): loss = mean(.3, .5, .4, .4) = .4; |r| = (.1 + .1 + .1 + .2)/4 = .125;
      accuracy: -.1 > .1 no, .1 > -.2 yes -> .5; lambda = (.7 + .9)/2 = .8; D = ((.3-.1) + (.5-.4))/2 = .15
    interval 1 (evaluations 1, 3): loss = mean of model_w .1, .2 and model_l .2, .1 = .6/4 = .15; |r| = (0 + 0 + .1 + 0)/4 = .025; accuracy: 0 > .1 no, 0 > 0 no (a tie
      is wrong) -> 0; lambda = (.2 + 0)/2 = .1; D = ((.1-.1) + (.2-.3))/2 = -.05
    """
    t = torch.tensor
    stats = interval_statistics(
        interval=t([0, 1, 0, 1]),
        timesteps=t([7, 2, 9, 0]),
        model_w=t([0.3, 0.1, 0.5, 0.2]),
        model_l=t([0.4, 0.2, 0.4, 0.1]),
        ref_w=t([0.2, 0.1, 0.6, 0.2]),
        ref_l=t([0.5, 0.3, 0.2, 0.1]),
        init_w=t([0.1, 0.1, 0.4, 0.3]),
        lambdas=torch.arange(10) / 10,
        num_train_timesteps=10,
        intervals=2,
    )
    first, second = stats
    assert (first.bin, first.t_low, first.t_high, first.n) == (0, 5, 10, 2)
    assert (second.bin, second.t_low, second.t_high, second.n) == (1, 0, 5, 2)
    assert first.loss == pytest.approx(0.4) and second.loss == pytest.approx(0.15)
    assert first.reward_scale == pytest.approx(0.125) and second.reward_scale == pytest.approx(0.025)
    assert first.accuracy == 0.5 and second.accuracy == 0.0
    assert first.lambda_t == pytest.approx(0.8) and second.lambda_t == pytest.approx(0.1)
    assert first.divergence == pytest.approx(0.15) and second.divergence == pytest.approx(-0.05)


def test_interval_statistics_refuses_ragged_inputs():
    t = torch.tensor
    with pytest.raises(ValueError, match="one entry per evaluation"):
        interval_statistics(
            interval=t([0, 1]),
            timesteps=t([1]),
            model_w=t([0.1, 0.2]),
            model_l=t([0.1, 0.2]),
            ref_w=t([0.1, 0.2]),
            ref_l=t([0.1, 0.2]),
            init_w=t([0.1, 0.2]),
            lambdas=torch.ones(10),
            num_train_timesteps=10,
            intervals=2,
        )


@pytest.fixture(scope="module")
def trained(toy_world, tmp_path_factory):  # noqa: F811
    """diff-dpo (fixed reference) and refdpo with tau 2 over 4 steps, so its last step is a sync."""
    root = tmp_path_factory.mktemp("analysis")
    for method in ("diff-dpo", "refdpo"):
        run_training(
            config_for(toy_world, method=method, max_steps=4),
            db=root / "db.duckdb",
            out_root=root / "runs",
            progress=False,
        )
    return root


def _analyse(trained, toy_world, run, **kwargs):  # noqa: F811
    from refbench.experiments.timestep_analysis import analyse_run

    return analyse_run(
        run,
        db=trained / "db.duckdb",
        num_pairs=6,
        intervals=4,
        progress=False,
        data=str(toy_world / "pairs.parquet"),
        **kwargs,
    )


def test_analysis_rows_in_the_store(trained, toy_world):  # noqa: F811
    """T = 1000, K = 4: intervals [750, 1000), [500, 750), [250, 500), [0, 250), each with the 6 pairs;
    lambda(t) runs from 1 (t = 0) to 2 (t = 999), so the noisiest interval has the largest mean."""
    frame = _analyse(trained, toy_world, "diff-dpo")
    assert frame[["bin", "t_low", "t_high", "n"]].values.tolist() == [
        [0, 750, 1000, 6],
        [1, 500, 750, 6],
        [2, 250, 500, 6],
        [3, 0, 250, 6],
    ]
    assert frame["lambda_t"].between(1, 2).all() and frame["lambda_t"].is_monotonic_decreasing
    assert frame["accuracy"].between(0, 1).all() and (frame["loss"] > 0).all()
    stored = Store(trained / "db.duckdb").query("select * from timestep_stats where run = 'diff-dpo' order by bin")
    assert len(stored) == 4 and stored["analysis"].eq("reference").all()
    again = _analyse(trained, toy_world, "diff-dpo")  # replaces, never duplicates
    assert len(Store(trained / "db.duckdb").query("select * from timestep_stats where run = 'diff-dpo'")) == 4
    assert again["reward_scale"].tolist() == pytest.approx(frame["reward_scale"].tolist())


def test_fixed_reference_is_the_initial_model(trained, toy_world):  # noqa: F811
    """diff-dpo's reference is the initial model, so --against init gives the same rows, and r_t(w)
    = -(err_policy(w) - err_init(w)): the mean |r| over winners and losers is >= |mean D| / 2."""
    reference = _analyse(trained, toy_world, "diff-dpo")
    init = _analyse(trained, toy_world, "diff-dpo", against="init")
    for column in ("loss", "reward_scale", "accuracy", "divergence"):
        assert init[column].tolist() == pytest.approx(reference[column].tolist(), rel=1e-6, abs=1e-12)
    assert (reference["reward_scale"] * 2 >= reference["divergence"].abs() - 1e-12).all()


def test_policy_equal_to_reference_has_no_reward(trained, toy_world):  # noqa: F811
    """refdpo synced at its last step (4 = 2 tau): policy == reference, so every r_t is 0, |r_t| = 0 and
    accuracy 0 (a zero margin counts as wrong); against init the reward is not zero."""
    frame = _analyse(trained, toy_world, "refdpo")
    assert frame["reward_scale"].eq(0).all() and frame["accuracy"].eq(0).all()
    assert (_analyse(trained, toy_world, "refdpo", against="init")["reward_scale"] > 0).all()


def test_batch_size_does_not_change_the_result(trained, toy_world):  # noqa: F811
    """Timesteps and noise are a function of (seed, pair): 4 evaluations per pass or 48 give the same numbers."""
    small = _analyse(trained, toy_world, "diff-dpo", batch_pairs=4)
    large = _analyse(trained, toy_world, "diff-dpo", batch_pairs=48)
    for column in ("loss", "reward_scale", "divergence", "lambda_t"):
        assert small[column].tolist() == pytest.approx(large[column].tolist(), rel=1e-4, abs=1e-9)


@pytest.mark.slow
def test_cli_prints_the_table_and_writes_a_figure(trained, toy_world, tmp_path, monkeypatch, capsys):  # noqa: F811
    """Through the real entry point, in this process (``cli_helpers.run_refbench``)."""
    from cli_helpers import run_refbench

    figure = tmp_path / "ts.png"
    code, out, err = run_refbench(
        monkeypatch,
        capsys,
        "timestep-analysis",
        "diff-dpo",
        "--db",
        trained / "db.duckdb",
        "--pairs",
        "4",
        "--intervals",
        "2",
        "--data",
        toy_world / "pairs.parquet",
        "--figure",
        figure,
        "--format",
        "markdown",
        "--no-progress",
    )
    assert code == 0, err
    assert "| bin | t_low | t_high | n |" in out and figure.stat().st_size > 1000
    code, _, err = run_refbench(monkeypatch, capsys, "timestep-analysis", "nope", "--db", trained / "db.duckdb")
    assert code == 2 and err.strip().count("\n") == 0 and "no run named 'nope'" in err
