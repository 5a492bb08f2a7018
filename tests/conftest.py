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


# Tests that share an expensive module or session fixture run on one pytest-xdist worker, so that
# it is built once rather than once a worker: test id prefix (a module, or one test) -> group.
# (pytest-xdist's own --dist loadgroup with xdist_group marks does not group under pytest 9: it
# renames item._nodeid, which pytest 9 no longer reads; so this conftest gives xdist a scheduler.)
SAME_WORKER = {
    "tests/training/test_reliability.py::test_sigkill_at_a_random_step": "reliability shared_db",
    "tests/training/test_reliability.py::test_killed_generate_and_score": "reliability shared_db",
    "tests/training/test_reliability.py::test_concurrent_processes_neither": "reliability shared_db",
    "tests/experiments/test_bench.py::": "bench result",
    "tests/experiments/test_timestep_analysis.py::": "timestep-analysis trained",
    "tests/experiments/test_plan_workers.py::test_jobs_1_and_jobs_2": "two_runs_at_jobs_2",
    "tests/experiments/test_sweep.py::test_sweep_trains_then_skips": "two_runs_at_jobs_2",
}


def same_worker_group(nodeid: str) -> str | None:
    return next((group for prefix, group in SAME_WORKER.items() if nodeid.startswith(prefix)), None)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, absent under -p no:xdist
def pytest_xdist_make_scheduler(config, log):
    """`-n N` (dist load): xdist's load scheduling by whole work units, each test its own unit but
    the tests of a SAME_WORKER group one unit (the largest units first, then collection order)."""
    if config.getvalue("dist") not in ("load", "loadgroup"):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SameWorkerScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return same_worker_group(nodeid) or nodeid

    return SameWorkerScheduling(config, log)


# The longest tests that are not in a SAME_WORKER group (20 s and more each in `make test` on 2
# cores), by test id: collected first, so that the short tests fill the workers' last minutes
# instead of one long test running alone at the end. Only the order changes; every test still runs.
# (The groups are sent first anyway, the largest first.) The tests that interrupt a run wait for
# evidence that it is under way (a checkpoint on disk, a step on the progress bar), so running them
# while the machine is busiest does not let a run finish first.
LONGEST_FIRST = (
    "tests/training/test_fsdp.py::test_refdpo_on_sd15_killed_and_resumed_under_fsdp_agrees_with_data_parallel",
    "tests/experiments/test_paper_regime.py::test_paper_regime_tunes_then_trains_with_the_choice",
    "tests/experiments/test_plan_workers.py::test_a_killed_worker_fails_its_run_only_and_the_rerun_resumes_it",
    "tests/experiments/test_plan_workers.py::test_ctrl_c_stops_the_workers_with_a_checkpoint",
    "tests/training/test_fsdp.py::test_diff_dpo_on_sd15_fsdp_and_data_parallel_agree",
    "tests/training/test_fsdp.py::test_refdpo_lora_on_sd3_fsdp_and_data_parallel_agree_and_load_in_diffusers",
    "tests/training/test_fsdp.py::test_diff_dpo_on_sd3_fsdp_and_data_parallel_agree",
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
