"""`refbench make-pairs` (issue 27): on-policy pairs from a model's own samples, ranked by a reward model.

The selection rule is checked on hand-made score lists; end to end, on the toy world with the
`human` oracle, every label is checked against the stored candidate scores and every stored score
against the oracle recomputed on the written images; then `refbench train --data OUT` trains on
them. A SIGKILL mid-run is resumed; a reward model that cannot load is one line and leaves nothing.
The tiny SD1.5 pipeline (with a tiny PickScore) makes pairs from a base folder, from a LoRA run's
name and from its LoRA folder.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from cli_helpers import run_refbench as refbench

from refbench.evaluation.make_pairs import KILL_AFTER_ENV, Pair, read_metadata, select_pairs
from refbench.store import Store

REPO = Path(__file__).resolve().parents[2]


# ---- the selection rule --------------------------------------------------------------------------


def test_best_against_worst_by_hand():
    # the first of the equal bests (index 1) against the last of the equal worsts (index 4)
    assert select_pairs([0.2, 0.9, 0.5, 0.9, 0.2]) == [Pair(1, 4, 1.0)]
    # the best has the higher seed: image 0 is the worse one, label 0
    assert select_pairs([0.1, 0.4, 0.8]) == [Pair(0, 2, 0.0)]
    # all equal: a tie between the first and the last
    assert select_pairs([0.5, 0.5, 0.5]) == [Pair(0, 2, 0.5)]
    # within the tie tolerance: a tie; beyond it: decided
    assert select_pairs([0.5, 0.45], tie_tolerance=0.1) == [Pair(0, 1, 0.5)]
    assert select_pairs([0.5, 0.55, 0.3], tie_tolerance=0.1) == [Pair(1, 2, 1.0)]
    with pytest.raises(ValueError):
        select_pairs([0.3])


def test_min_gap_by_hand():
    scores = [0.2, 0.9, 0.5, 0.9, 0.2]
    # gaps: (0,1) .7 (0,2) .3 (0,3) .7 (0,4) 0 (1,2) .4 (1,3) 0 (1,4) .7 (2,3) .4 (2,4) .3 (3,4) .7
    assert select_pairs(scores, min_gap=0.35) == [
        Pair(0, 1, 0.0),
        Pair(0, 3, 0.0),
        Pair(1, 2, 1.0),
        Pair(1, 4, 1.0),
        Pair(2, 3, 0.0),
        Pair(3, 4, 1.0),
    ]
    # gap 0 never exceeds a gap of 0: equal scores are left out
    assert Pair(0, 4, 0.5) not in select_pairs(scores, min_gap=0.0)
    assert len(select_pairs(scores, min_gap=0.0)) == 8
    assert select_pairs(scores, min_gap=0.8) == []
    # a gap above min_gap but within the tie tolerance is a tie
    assert select_pairs([0.5, 0.45, 0.3], min_gap=0.01, tie_tolerance=0.1) == [
        Pair(0, 1, 0.5),
        Pair(0, 2, 1.0),
        Pair(1, 2, 1.0),
    ]


# ---- end to end on the toy world -----------------------------------------------------------------


def _args(toy_world, tmp_path, out, *extra):
    return [
        "make-pairs",
        "--model",
        toy_world / "base",
        "--prompts",
        "toy-train",
        "--reward",
        "human",
        "--per-prompt",
        "3",
        "--num-prompts",
        "6",
        "--steps",
        "4",
        "--seed",
        "10",
        "--out",
        out,
        "--db",
        tmp_path / "db.duckdb",
        "--no-progress",
        *extra,
    ]


def _candidates(db: Path, out: Path) -> dict[str, dict[int, float]]:
    frame = Store(db).query("SELECT prompt, seed, score FROM pair_candidates WHERE out = ?", [str(out.resolve())])
    scores: dict[str, dict[int, float]] = {}
    for prompt, seed, score in frame.itertuples(index=False):
        scores.setdefault(prompt, {})[int(seed)] = float(score)
    return scores


def test_toy_pairs_labels_metadata_and_training(toy_world, tmp_path, monkeypatch, capsys):
    from refbench.evaluation.metrics import get_metric
    from refbench.evaluation.prompt_sets import load_prompt_set
    from refbench.training.data import decode_image

    db, out = tmp_path / "db.duckdb", tmp_path / "pairs"
    code, stdout, err = refbench(monkeypatch, capsys, *_args(toy_world, tmp_path, out))
    assert code == 0, err
    assert "6 pairs (0 ties) from 6 prompts" in stdout
    table = pq.read_table(out / "pairs.parquet").to_pylist()
    prompts = load_prompt_set("toy-train")[:6]
    assert [row["caption"] for row in table] == prompts  # one pair a prompt, in the set's order
    stored = _candidates(db, out)
    assert set(stored) == set(prompts) and all(sorted(s) == [10, 11, 12] for s in stored.values())
    human = get_metric("human")
    for row in table:
        scores = stored[row["caption"]]
        best = max(scores, key=lambda s: (scores[s], -s))
        worst = min(scores, key=lambda s: (scores[s], -s))
        assert {row["seed_0"], row["seed_1"]} == {best, worst} and row["seed_0"] < row["seed_1"]
        assert row["label_0"] == (1.0 if scores[row["seed_0"]] > scores[row["seed_1"]] else 0.0)
        # the stored scores are the oracle's on the very images written
        images = np.stack([decode_image(row["jpg_0"]), decode_image(row["jpg_1"])])
        np.testing.assert_allclose(human(images, [row["caption"]] * 2), [row["score_0"], row["score_1"]])
        assert (row["score_0"], row["score_1"]) == (scores[row["seed_0"]], scores[row["seed_1"]])

    meta = read_metadata(out / "pairs.parquet")
    oracle_sha = hashlib.sha256((REPO / "refbench" / "toy" / "oracle.py").read_bytes()).hexdigest()
    assert meta["reward"] == "human" and meta["reward_source"] == "builtin:refbench.toy.oracle"
    assert meta["reward_sha256"] == oracle_sha
    assert (meta["model_kind"], meta["steps"], meta["seeds"], meta["per_prompt"]) == ("toy", 4, [10, 11, 12], 3)
    assert meta["pretrained"] == str((toy_world / "base").resolve()) and meta["height"] == meta["width"] == 16
    assert meta["guidance_scale"] > 0 and meta["selection"] == "best-vs-worst"
    assert meta["scores"] == {p: [stored[p][s] for s in (10, 11, 12)] for p in prompts}
    sets = Store(db).query("SELECT * FROM pair_sets")
    assert len(sets) == 1 and sets["status"][0] == "complete" and sets["num_pairs"][0] == 6
    assert sets["reward_sha256"][0] == oracle_sha and sets["steps"][0] == 4
    assert Store(db).query("SELECT count(*) AS n FROM made_pairs")["n"][0] == 6
    assert not list((out / ".make-pairs").glob("*.part"))  # the parts are gone once joined

    # a rerun finds it complete and generates nothing
    code, stdout, _ = refbench(monkeypatch, capsys, *_args(toy_world, tmp_path, out))
    assert code == 0 and "already complete" in stdout

    # --min-gap: every pair whose gap exceeds it, the same images (same prompts, seeds, model)
    gapped = tmp_path / "gapped"
    code, _, err = refbench(monkeypatch, capsys, *_args(toy_world, tmp_path, gapped, "--min-gap", "0.05"))
    assert code == 0, err
    assert _candidates(db, gapped) == stored
    expect = sorted(
        (p, a, b)
        for p, scores in stored.items()
        for a, b in itertools.combinations(sorted(scores), 2)
        if abs(scores[a] - scores[b]) > 0.05
    )
    rows = pq.read_table(gapped / "pairs.parquet").to_pylist()
    assert sorted((r["caption"], r["seed_0"], r["seed_1"]) for r in rows) == expect and len(expect) > 6
    for r in rows:
        assert r["label_0"] == (1.0 if stored[r["caption"]][r["seed_0"]] > stored[r["caption"]][r["seed_1"]] else 0.0)

    # refbench train --data OUT trains on them
    code, _, err = refbench(
        monkeypatch,
        capsys,
        "train",
        "--model",
        toy_world / "base",
        "--data",
        out,
        "--max-steps",
        "2",
        "--name",
        "onpolicy",
        "--db",
        db,
        "--out",
        tmp_path / "runs",
        "--no-progress",
    )
    assert code == 0, err
    steps = Store(db).query("SELECT step FROM train_metrics WHERE run = 'onpolicy' ORDER BY step")["step"].tolist()
    assert steps == [1, 2]
    # ... and the trained run makes the next round's pairs by its name
    args = _args(toy_world, tmp_path, tmp_path / "round2")
    args[args.index("--model") + 1] = "onpolicy"
    code, _, err = refbench(monkeypatch, capsys, *args)
    assert code == 0, err
    meta2 = read_metadata(tmp_path / "round2" / "pairs.parquet")
    assert meta2["model"] == "onpolicy" and meta2["policy"] == str(tmp_path / "runs" / "onpolicy" / "final")


def test_stopped_midway_resumes_in_process(toy_world, tmp_path, monkeypatch, capsys):
    """The fast tier's resume: the sampler fails on the third chunk (one prompt each); the rerun
    keeps the two finished prompts' scores (no new samples for them) and makes the other four."""
    from refbench.training.backends import samplers

    db, out = tmp_path / "db.duckdb", tmp_path / "pairs"
    args = _args(toy_world, tmp_path, out, "--batch-size", "3")
    original, calls, stop = samplers.ToySampler.__call__, [], True

    def failing(self, prompts, *rest, **kwargs):
        nonlocal stop
        calls.append(prompts[0])
        if len(calls) == 3 and stop:
            raise KeyboardInterrupt
        return original(self, prompts, *rest, **kwargs)

    monkeypatch.setattr(samplers.ToySampler, "__call__", failing)
    code, _, _ = refbench(monkeypatch, capsys, *args)
    assert code == 130 and not (out / "pairs.parquet").exists()
    before = _candidates(db, out)
    assert len(before) == 2
    calls.clear()
    stop = False
    code, stdout, err = refbench(monkeypatch, capsys, *args)
    assert code == 0, err
    assert len(calls) == 4 and not set(calls) & set(before)  # only the four unfinished prompts sampled
    after = _candidates(db, out)
    assert len(after) == 6 and all(after[p] == s for p, s in before.items())
    assert pq.read_table(out / "pairs.parquet").num_rows == 6


@pytest.mark.slow
def test_resume_after_sigkill(toy_world, tmp_path, monkeypatch, capsys):
    """Killed (SIGKILL) after its first chunk of one prompt: nothing reads as complete; the rerun
    keeps the finished prompt's scores and makes the others."""
    from refbench.errors import RefbenchError
    from refbench.training.sources import open_pair_source

    db, out = tmp_path / "db.duckdb", tmp_path / "pairs"
    args = _args(toy_world, tmp_path, out, "--batch-size", "3")  # 3 images = one prompt a chunk
    env = {**os.environ, KILL_AFTER_ENV: "1", "OMP_NUM_THREADS": "1"}
    child = subprocess.run(
        [sys.executable, "-m", "refbench", *map(str, args)], env=env, capture_output=True, text=True, timeout=300
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert not (out / "pairs.parquet").exists()
    with pytest.raises(RefbenchError, match="no parquet files"):
        open_pair_source(out)  # `train --data OUT` refuses the half-made folder
    sets = Store(db).query("SELECT status, prompts_done FROM pair_sets")
    assert sets.values.tolist() == [["running", 1]]
    before = _candidates(db, out)
    assert len(before) == 1

    # another protocol cannot resume it
    code, _, err = refbench(monkeypatch, capsys, *_args(toy_world, tmp_path, out, "--batch-size", "3", "--seed", "0"))
    assert code == 2 and err.startswith("error: ") and "another protocol" in err and "\n" not in err

    code, stdout, err = refbench(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "6 pairs (0 ties) from 6 prompts" in stdout
    after = _candidates(db, out)
    assert len(after) == 6 and all(after[p] == s for p, s in before.items())
    captions = [r["caption"] for r in pq.read_table(out / "pairs.parquet", columns=["caption"]).to_pylist()]
    assert len(captions) == len(set(captions)) == 6
    assert open_pair_source(out).num_rows == 6
    assert Store(db).query("SELECT status FROM pair_sets")["status"].tolist() == ["complete"]
    meta = read_metadata(out / "pairs.parquet")
    assert json.dumps(meta["scores"], sort_keys=True) == json.dumps(
        {p: [after[p][s] for s in (10, 11, 12)] for p in after}, sort_keys=True
    )


@pytest.mark.parametrize("reward", ["pickscore=/no/such/folder", "no-such-metric"])
def test_reward_that_cannot_load_is_one_line_and_leaves_nothing(toy_world, tmp_path, monkeypatch, capsys, reward):
    out = tmp_path / "pairs"
    args = _args(toy_world, tmp_path, out)
    args[args.index("human")] = reward
    code, stdout, err = refbench(monkeypatch, capsys, *args)
    assert code == 2 and err.startswith("error: ") and "\n" not in err, err
    assert not out.exists()


# ---- the tiny SD1.5 pipeline ---------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_sd15_base_lora_run_and_lora_folder(tmp_path, monkeypatch, capsys):
    """Pairs from a tiny SD1.5 folder scored by a tiny PickScore; a 2-step LoRA run trains on them;
    its name and its LoRA folder (on the base) then make identical next-round pairs."""
    from reward_helpers import tiny_hf_clip

    from refbench.training.backends import backend_class

    backend_class("sd15").build_tiny(tmp_path / "sd15")
    tiny_hf_clip(tmp_path / "pick")
    db = tmp_path / "db.duckdb"

    def make(model, out, *extra):
        code, stdout, err = refbench(
            monkeypatch,
            capsys,
            "make-pairs",
            "--model",
            model,
            "--preset",
            "sd15",
            "--resolution",
            "16",
            "--prompts",
            "toy-train",
            "--num-prompts",
            "4",
            "--reward",
            f"pickscore={tmp_path / 'pick'}",
            "--per-prompt",
            "2",
            "--steps",
            "2",
            "--out",
            tmp_path / out,
            "--db",
            db,
            "--no-progress",
            *extra,
        )
        assert code == 0, err
        return pq.read_table(tmp_path / out / "pairs.parquet"), read_metadata(tmp_path / out / "pairs.parquet")

    base, meta = make(tmp_path / "sd15", "base")
    assert base.num_rows == 4 and meta["model_kind"] == "sd15" and meta["height"] == 16
    assert meta["reward_source"] == str(tmp_path / "pick")
    files = sorted((tmp_path / "pick").glob("*.safetensors")) + sorted((tmp_path / "pick").glob("*.bin"))
    digest = hashlib.sha256()
    for file in sorted(files):
        digest.update(file.read_bytes())
    assert meta["reward_sha256"] == digest.hexdigest()
    for row in base.to_pylist():
        assert row["label_0"] == (1.0 if row["score_0"] > row["score_1"] else 0.0)
    train = ["train", "--preset", "sd15", "--model", tmp_path / "sd15", "--data", tmp_path / "base"]
    code, _, err = refbench(
        monkeypatch,
        capsys,
        *train,
        *("--max-steps", "2", "--resolution", "16", "--batch-size", "2", "--accumulation", "1"),
        *("--lora-rank", "4", "--name", "lora", "--db", db, "--out", tmp_path / "runs", "--no-progress"),
    )
    assert code == 0, err
    by_name, meta_name = make("lora", "by-name")
    by_folder, meta_folder = make(tmp_path / "runs" / "lora" / "final", "by-folder", "--base-model", tmp_path / "sd15")
    assert meta_name["policy"] == meta_folder["policy"] == str(tmp_path / "runs" / "lora" / "final")
    assert meta_name["scores"] == meta_folder["scores"]  # the same LoRA on the same base, the same noise
