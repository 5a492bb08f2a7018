"""Tests never download: the hub is off and caches point at a temporary folder."""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see refbench/__init__.py
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="refbench-hf-"))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory):
    """Path of the small complete store of tests/analysis_store.py, built once a session.
    Shared: copy the file before changing it."""
    from analysis_store import build_synthetic_store

    path = tmp_path_factory.mktemp("synthetic") / "synthetic.duckdb"
    build_synthetic_store(path)
    return path
