"""A sweep shared by two tests of the plan's workers (built once a session: both tests run on one
pytest-xdist worker, tests/conftest.py's SAME_WORKER)."""

import pytest
from sweep_helpers import evaluation_steps, tiny_specs


@pytest.fixture(scope="session")
def two_runs_at_jobs_2(tmp_path_factory):
    """diff-dpo and refdpo, 4 steps each, trained, sampled and scored by `run_specs` at jobs 2 (one
    worker each) on a toy world of its own (the conftest's, built the same way): the world, the
    specs, the store and run folder, the outcomes and the timings."""
    from refbench.experiments.sweep import run_specs
    from refbench.toy.model import build_components, save_components
    from refbench.toy.pairs import build_pairs, write_pairs

    world = tmp_path_factory.mktemp("toy-jobs")
    save_components(build_components(seed=0), world / "base")
    write_pairs(build_pairs(64, "train", seed=0), world / "pairs.parquet")
    root = tmp_path_factory.mktemp("jobs-2")
    db, out = root / "j2.duckdb", root / "runs2"
    specs = tiny_specs(world, ["diff-dpo", "refdpo"], 4)
    timings = {}
    outcomes = run_specs(
        specs, db=db, out_root=out, jobs=2, progress=False, then=evaluation_steps(db, out), timings=timings
    )
    return {"world": world, "specs": specs, "db": db, "out": out, "outcomes": outcomes, "timings": timings}
