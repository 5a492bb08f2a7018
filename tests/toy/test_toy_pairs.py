"""Tests of the toy Pick-a-Pic pair builder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refbench.toy import pairs as P
from refbench.toy.oracle import analyse
from refbench.toy.prompts import ToyPrompt, parse_prompt, prompt_set
from refbench.toy.render import from_png_bytes, render_clean

COLUMNS = ["caption", "jpg_0", "jpg_1", "label_0", "generator_0", "generator_1", "human_0", "human_1"]


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return P.build_pairs(300, "train", seed=0)


def test_schema_and_values(table: pa.Table) -> None:
    assert table.column_names == COLUMNS
    assert table.num_rows == 300
    assert table.schema.field("jpg_0").type == pa.binary()
    assert table.schema.field("label_0").type == pa.float64()
    labels = table["label_0"].to_numpy()
    assert set(np.unique(labels)) <= {0.0, 0.5, 1.0}
    assert {0.0, 1.0} <= set(np.unique(labels))
    train = set(prompt_set("toy-train"))
    assert all(parse_prompt(c) in train for c in table["caption"].to_pylist())
    gens = set(table["generator_0"].to_pylist()) | set(table["generator_1"].to_pylist())
    assert gens == {f"level-{lv}" for lv in P.LEVELS}


def test_images_and_human_column(table: pa.Table) -> None:
    """PNG is lossless, so re-scoring the decoded images reproduces the human column."""
    sub = table.slice(0, 50)
    imgs = np.stack([from_png_bytes(b) for b in sub["jpg_0"].to_pylist()])
    assert imgs.shape == (50, 16, 16, 3)
    h = analyse(imgs, sub["caption"].to_pylist())["human"]
    assert np.allclose(h, sub["human_0"].to_numpy())


def test_labels_follow_human(table: pa.Table) -> None:
    lab = table["label_0"].to_numpy()
    d = table["human_0"].to_numpy() - table["human_1"].to_numpy()
    decided = (lab != 0.5) & (np.abs(d) > 0.1)
    assert np.mean((lab[decided] == 1.0) == (d[decided] > 0)) > 0.75
    # better generators are preferred on average
    g0 = np.array(table["generator_0"].to_pylist())
    h0 = table["human_0"].to_numpy()
    assert h0[g0 == "level-0.1"].mean() > h0[g0 == "level-0.8"].mean()


def test_bt_labels_rates() -> None:
    """Delta = +0.2 with T = 0.08: P(label 1 | no tie) = sigmoid(2.5) = 0.924 and
    P(tie) = 0.8 * exp(-0.2 / 0.04) = 0.0054. Delta = 0: P(tie) = 0.8."""
    rng = np.random.default_rng(0)
    n = 20000
    lab = P.bt_labels(np.full(n, 0.7), np.full(n, 0.5), rng)
    assert abs(np.mean(lab == 1.0) / np.mean(lab != 0.5) - 0.924) < 0.01
    assert np.mean(lab == 0.5) < 0.01
    lab = P.bt_labels(np.full(n, 0.5), np.full(n, 0.5), rng)
    assert abs(np.mean(lab == 0.5) - 0.8) < 0.02


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_parquet_round_trip_and_determinism(tmp_path: Path) -> None:
    a = P.build_pairs(120, "train", seed=3)
    b = P.build_pairs(120, "train", seed=3)
    pa_, pb = P.write_pairs(a, tmp_path / "a.parquet"), P.write_pairs(b, tmp_path / "sub" / "b.parquet")
    assert _sha(pa_) == _sha(pb)
    back = P.read_pairs(pa_)
    assert back.equals(a)
    assert back.column_names == COLUMNS
    other = P.write_pairs(P.build_pairs(120, "train", seed=4), tmp_path / "c.parquet")
    val = P.write_pairs(P.build_pairs(120, "validation", seed=3), tmp_path / "d.parquet")
    assert len({_sha(pa_), _sha(other), _sha(val)}) == 3


def test_extra_generator() -> None:
    def clean(prompts: list[ToyPrompt], rng: np.random.Generator) -> list[np.ndarray]:
        return [render_clean(p, rng) for p in prompts]

    t = P.build_pairs(400, "validation", seed=1, extra_generators={"clean": clean})
    g0 = np.array(t["generator_0"].to_pylist())
    g1 = np.array(t["generator_1"].to_pylist())
    assert "clean" in set(g0) | set(g1)
    lab = t["label_0"].to_numpy()
    m = (g0 == "clean") & (g1 == "level-0.8")
    assert m.any() and lab[m].mean() > 0.8  # clean images beat heavy corruption

    with pytest.raises(ValueError, match="returned"):
        P.build_pairs(50, "train", seed=0, extra_generators={"bad": lambda ps, r: []})
    with pytest.raises(ValueError, match="clashes"):
        P.build_pairs(10, "train", seed=0, extra_generators={"level-0.1": clean})


def test_bad_split_and_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="train, validation"):
        P.build_pairs(10, "test", seed=0)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(ValueError):
        P.read_pairs(bad)
    pq.write_table(pa.table({"caption": ["x"]}), tmp_path / "few.parquet")
    with pytest.raises(ValueError, match="missing columns"):
        P.read_pairs(tmp_path / "few.parquet")
    assert P.build_pairs(0, "train", seed=0).num_rows == 0
