"""Live curves through accelerate's trackers: `refbench train --report-to tensorboard`."""

import pytest
from toy_helpers import config_for

from refbench.store import Store


def test_tensorboard_gets_what_the_store_gets(toy_world, tmp_path):
    """3 steps of refdpo (tau 2): TensorBoard's event file in RUN/logs holds train/loss at steps
    1, 2, 3 with the store's values, and the sync at step 2 with its divergence."""
    import dataclasses

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from refbench.training.run import run_training

    config = config_for(toy_world, max_steps=3)
    config = dataclasses.replace(config, training=dataclasses.replace(config.training, report_to="tensorboard"))
    run_training(config, db=tmp_path / "db.duckdb", out_root=tmp_path / "runs", progress=False)
    folders = [p.parent for p in (tmp_path / "runs" / "refdpo" / "logs").rglob("events.out.tfevents.*")]
    assert folders, "no TensorBoard event file"
    events = EventAccumulator(str(folders[0])).Reload()
    loss = [(e.step, e.value) for e in events.Scalars("train/loss")]
    stored = Store(tmp_path / "db.duckdb").query("select step, loss from train_metrics order by step")
    assert [s for s, _ in loss] == stored["step"].tolist() == [1, 2, 3]
    assert [v for _, v in loss] == pytest.approx(stored["loss"].tolist(), rel=1e-6)
    syncs = Store(tmp_path / "db.duckdb").query(
        "select step, divergence from ref_events where kind = 'sync' order by step"
    )
    assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in events.Scalars("events/sync")] == list(
        zip(syncs["step"], syncs["divergence"])
    )
