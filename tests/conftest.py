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
