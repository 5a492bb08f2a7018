"""generate -> score -> winrate on the committed toy base model, through the CLI.

The commands run in this process through the real entry point (``cli_helpers.run_refbench``: its
exit codes, its stdout and its one-line errors); only `accelerate launch` starts processes here."""

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from cli_helpers import run_refbench
from launch_helpers import accelerate_launch

from refbench.store import Store


@pytest.fixture
def refbench(monkeypatch, capsys):
    """`refbench ARGS` in this process: an object with returncode, stdout and stderr (stripped)."""

    def call(*args):
        code, out, err = run_refbench(monkeypatch, capsys, *args)
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    return call


@pytest.mark.slow
def test_generate_score_winrate_and_rerun_skips(tmp_path, refbench):
    db, out = str(tmp_path / "db.duckdb"), str(tmp_path / "runs")
    common = ["--db", db, "--out", out]
    result = refbench(
        "generate",
        "base",
        "--prompts",
        "toy-test",
        "--num-prompts",
        "3",
        "--seeds",
        "2",
        "--steps",
        "5",
        "--no-progress",
        *common,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "6 images generated, 0 already there" in result.stdout
    again = refbench(
        "generate",
        "base",
        "--prompts",
        "toy-test",
        "--num-prompts",
        "3",
        "--seeds",
        "2",
        "--steps",
        "5",
        "--no-progress",
        *common,
    )
    assert "0 images generated, 6 already there" in again.stdout
    result = refbench("score", "base", "--metrics", "all", "--db", db, "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]
    store = Store(db)
    counts = store.query("select metric, count(*) as n from scores group by metric order by metric")
    assert set(counts["metric"]) >= {"colour", "count", "shape", "aesthetic", "human"} and set(counts["n"]) == {6}
    rescore = refbench("score", "base", "--metrics", "human", "--db", db, "--no-progress")
    assert "human: 0 new" in rescore.stdout
    # A model against itself on the same (prompt, seed) pairs: identical images, all ties, 50%.
    result = refbench(
        "winrate", "base", "--baseline", "base", "--num-prompts", "3", "--seeds", "2", "--format", "json", *common
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout)
    assert [r["metric"] for r in rows] == ["human", "colour", "count", "shape", "aesthetic"]
    assert all(r["rate"] == 0.5 and r["n"] == 6 for r in rows)


@pytest.mark.slow
def test_missing_run_and_unknown_metric_are_one_line(tmp_path, refbench):
    db = str(tmp_path / "db.duckdb")
    result = refbench("generate", "nope", "--prompts", "toy-test", "--db", db)
    assert result.returncode == 2 and result.stderr.startswith("error: no run named 'nope'")
    result = refbench("score", "base", "--metrics", "sharpness", "--db", db)
    assert result.returncode == 2 and "sharpness" in result.stderr and "Traceback" not in result.stderr
    result = refbench("winrate", "base", "--baseline", "base", "--num-prompts", "2", "--db", db)
    assert result.returncode == 2 and "refbench generate base --prompts toy-test --num-prompts 2" in result.stderr


@pytest.mark.slow
def test_two_processes_split_generation(tmp_path, refbench):
    """`accelerate launch` with 2 processes: each makes half of the images, all rows land once,
    and the images equal those of a single process (noise depends only on prompt and seed)."""
    import os

    import numpy as np
    from PIL import Image

    common = ["--prompts", "toy-test", "--num-prompts", "4", "--steps", "4", "--no-progress"]
    result = subprocess.run(
        [
            *accelerate_launch(2),
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "refbench",
            "generate",
            "base",
            *common,
            "--db",
            str(tmp_path / "two.duckdb"),
            "--out",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("4 images generated") == 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the launched processes (OMP_NUM_THREADS=1): the same float rounding
    try:
        single = refbench(
            "generate", "base", *common, "--db", tmp_path / "one.duckdb", "--out", tmp_path / "one"
        )  # one process: this one
    finally:
        torch.set_num_threads(threads)
    assert single.returncode == 0, single.stderr[-2000:]
    two = Store(tmp_path / "two.duckdb").query("select prompt, seed, image_path from samples order by prompt, seed")
    one = Store(tmp_path / "one.duckdb").query("select prompt, seed, image_path from samples order by prompt, seed")
    assert len(two) == 4 and two[["prompt", "seed"]].equals(one[["prompt", "seed"]])
    for a, b in zip(two["image_path"], one["image_path"]):
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


@pytest.mark.slow
def test_samples_of_another_protocol_are_never_topped_up_and_regenerate_remakes_them(tmp_path, refbench):
    """2 of 3 prompts made at 2 steps. Asking for 3 prompts at the default 50 steps (generate, or
    winrate --auto) is refused in one line before anything is made; asking for their 2 steps tops
    the set up; --regenerate at 3 steps removes the old rows, scores and images and remakes all 3."""
    from refbench.errors import RefbenchError
    from refbench.evaluation.generate import generate
    from refbench.evaluation.score import score
    from refbench.evaluation.winrates import compute_winrates

    db, out = tmp_path / "db.duckdb", tmp_path / "runs"
    common = dict(prompt_set="toy-test", db=db, out_root=out, progress=False)
    generate("base", num_prompts=2, steps=2, **common)
    score("base", metrics="human", db=db, progress=False)
    store = Store(db)
    old_images = set(store.query("select image_path from samples")["image_path"])
    for attempt in (
        lambda: generate("base", num_prompts=3, **common),
        lambda: compute_winrates(
            "base", "base", db=db, out_root=out, num_prompts=3, auto=True, metrics=["human"], progress=False
        ),
    ):
        try:
            attempt()
            raise AssertionError("a 50-step top-up of 2-step samples was not refused")
        except RefbenchError as exc:
            message = str(exc)
        assert message.startswith("base already has 2 samples on toy-test made with 2 steps; asked 50 steps")
        assert "--regenerate" in message and "\n" not in message
        assert len(store.query("select * from samples")) == 2
    assert generate("base", num_prompts=3, steps=2, **common)["generated"] == 1
    result = refbench(
        "generate",
        "base",
        "--num-prompts",
        "3",
        "--steps",
        "3",
        "--regenerate",
        "--no-progress",
        "--db",
        db,
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "3 images generated, 0 already there" in result.stdout
    rows = store.query("select num_steps, image_path from samples")
    assert list(rows["num_steps"]) == [3, 3, 3]
    assert len(store.query("select * from scores")) == 0  # the 2-step scores went with their samples
    assert all(Path(path).is_file() for path in rows["image_path"])
    assert old_images <= set(rows["image_path"])  # same file names, new images: the old files were replaced
