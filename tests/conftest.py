"""Tests never download: the hub is off and caches point at a temporary folder."""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see refbench/__init__.py
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="refbench-hf-"))
os.environ["REFBENCH_PROMPTS"] = tempfile.mkdtemp(prefix="refbench-prompts-")  # no local prompt copies


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory):
    """Path of the small complete store of tests/analysis_store.py, built once a session.
    Shared: copy the file before changing it."""
    from analysis_store import build_synthetic_store

    path = tmp_path_factory.mktemp("synthetic") / "synthetic.duckdb"
    build_synthetic_store(path)
    return path


@pytest.fixture(scope="module")
def toy_world(tmp_path_factory):
    """A random-weight toy model (same architecture as the committed one) and 64 toy pairs."""
    from refbench.toy.model import build_components, save_components
    from refbench.toy.pairs import build_pairs, write_pairs

    root = tmp_path_factory.mktemp("toy")
    save_components(build_components(seed=0), root / "base")
    write_pairs(build_pairs(64, "train", seed=0), root / "pairs.parquet")
    return root


# The longest tests that are not in an xdist_group (20 s and more each in `make test` on 2 cores),
# by test id: collected first, so that the short tests fill the workers' last minutes instead of
# one long test running alone at the end. Only the order changes; every test still runs. (The
# xdist_group tests go first anyway under --dist loadgroup, the largest groups first.) The tests
# that interrupt a run wait for evidence that it is under way (a checkpoint on disk, a step on the
# progress bar), so running them while the machine is busiest does not let a run finish first.
LONGEST_FIRST = (
    "tests/experiments/test_paper_regime.py::test_paper_regime_tunes_then_trains_with_the_choice",
    "tests/experiments/test_plan_workers.py::test_a_killed_worker_fails_its_run_only_and_the_rerun_resumes_it",
    "tests/experiments/test_plan_workers.py::test_ctrl_c_stops_the_workers_with_a_checkpoint",
    "tests/evaluation/test_generate_score.py::test_two_processes_split_generation",
    "tests/training/test_sd3_path.py::test_resume_and_two_processes_on_sd3",
    "tests/analysis/test_analysis.py::test_flow_report_and_the_verdicts_side_by_side",
    "tests/evaluation/test_make_pairs.py::test_resume_after_sigkill",
    "tests/experiments/test_sweep.py::test_sweep_killed_then_rerun_finishes_the_work",
    "tests/training/test_latent_cache.py::test_two_processes_split_the_build_and_make_the_same_cache",
    "tests/training/test_trainer.py::test_two_processes_take_identical_decisions",
)


def pytest_collection_modifyitems(config, items):
    rank = {nodeid: position for position, nodeid in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("[")[0], len(rank)))  # stable: the rest keep their order
