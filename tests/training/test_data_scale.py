"""Data at scale: memory flat in the data set's size, DataLoader workers that do not change a
batch, skips counted once, killed runs shown as interrupted, one error on every process."""

import dataclasses
import io
import os
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from launch_helpers import accelerate_launch
from PIL import Image
from toy_helpers import config_for

from refbench.store import Store


def jpeg(value: int, size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value % 256, dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def pick_a_pic_folder(folder: Path, rows: int, files: int, row_group: int) -> Path:
    """``rows`` rows in the Pick-a-Pic schema over ``files`` files of ``row_group``-row groups;
    every tenth row a tie."""
    folder.mkdir(parents=True)
    per_file = rows // files
    for index in range(files):
        numbers = range(index * per_file, (index + 1) * per_file)
        table = pa.table(
            {
                "caption": [f"prompt {n}" for n in numbers],
                "jpg_0": [jpeg(n) for n in numbers],
                "jpg_1": [jpeg(n + 7) for n in numbers],
                "label_0": [0.5 if n % 10 == 0 else float(n % 2) for n in numbers],
            }
        )
        pq.write_table(table, folder / f"train-{index:05d}.parquet", row_group_size=row_group)
    return folder


def test_what_the_loader_holds_does_not_grow_with_the_data(tmp_path):
    """A 1,000-row and an 8,000-row folder (4 and 32 files, row groups of 100 rows), each read at
    64 random pairs: the loader holds the row index, exactly 9 bytes a usable pair (an int64 row
    number and a bool winner side: 8,100 and 64,800 bytes; 7.7 MB for Pick-a-Pic's 851,293
    pairs), and at most 2 row groups (about 100 x 2 x 630-byte JPEGs each), whatever the size of
    the data: that part stays within 10% between the two folders, and the whole is below a
    tenth of what reading the 8,000-row folder into memory holds. Ties (every tenth row) are counted from caption and label alone."""
    from refbench.training.data import PreferencePairs, open_pair_source

    held, in_memory = {}, {}
    for rows, files in ((1_000, 4), (8_000, 32)):
        folder = pick_a_pic_folder(tmp_path / str(rows), rows, files, row_group=100)
        pairs = PreferencePairs(open_pair_source(folder), resolution=8)
        assert len(pairs) == rows * 9 // 10 and pairs.skipped.as_dict() == {"tie": rows // 10}
        for index in np.random.default_rng(0).choice(len(pairs), 64, replace=False):
            assert pairs[int(index)] is not None
        index_bytes = pairs.rows.nbytes + pairs.winner_is_0.nbytes
        assert index_bytes == 9 * len(pairs)
        held[rows] = pairs.held_bytes() - index_bytes  # the row groups in memory
        in_memory[rows] = pq.read_table(folder).nbytes  # what reading the whole folder would hold
    assert 0 < held[8_000] <= 1.10 * held[1_000]
    assert held[8_000] + 9 * 7_200 < in_memory[8_000] / 10


def test_a_row_is_read_from_the_right_file_and_row_group(tmp_path):
    """Row 2,345 of 3 files x 1,000 rows in groups of 128 is row 345 of file 2 (group 2, row 89):
    caption 'prompt 2345'; label_0 = 2345 % 2 = 1, so image 0 (value 2345 % 256 = 41) wins."""
    from refbench.training.data import PreferencePairs, open_pair_source

    folder = pick_a_pic_folder(tmp_path / "data", 3_000, 3, row_group=128)
    pairs = PreferencePairs(open_pair_source(folder), resolution=8)
    index = int(np.flatnonzero(pairs.rows == 2_345)[0])
    caption, winner, loser = pairs[index]
    assert caption == "prompt 2345"
    assert abs(int(winner.mean()) - 41) <= 2 and abs(int(loser.mean()) - 48) <= 2


def test_workers_do_not_change_the_batches_and_resume_stays_exact(toy_world, tmp_path):
    """0 and 2 DataLoader workers give bit-identical weights after 4 steps; with 2 workers, 2
    steps then --resume to 4 equal 4 uninterrupted steps within 1e-6."""
    from safetensors.torch import load_file

    from refbench.training.run import run_training

    def weights(name):
        return load_file(str(tmp_path / "runs" / name / "final" / "unet" / "diffusion_pytorch_model.safetensors"))

    def train(name, workers, steps, resume=False):
        config = config_for(toy_world, "refdpo", name=name, max_steps=steps)
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, num_workers=workers))
        run_training(
            config,
            db=tmp_path / "db.duckdb",
            out_root=tmp_path / "runs",
            progress=False,
            resume=resume,
            overrides={"training": {"max_steps": steps}} if resume else None,
        )

    train("w0", 0, 4)
    train("w2", 2, 4)
    train("resumed", 2, 2)
    train("resumed", 2, 4, resume=True)
    plain, workers, resumed = weights("w0"), weights("w2"), weights("resumed")
    assert all(np.array_equal(plain[k].numpy(), workers[k].numpy()) for k in plain)
    assert max(float((plain[k] - resumed[k]).abs().max()) for k in plain) <= 1e-6


def test_an_unreadable_image_found_by_a_worker_is_counted_once(tmp_path):
    """8 pairs, one with a broken JPEG, batch 4, 2 workers, 6 steps = 3 epochs: the broken pair is
    met 3 times, by whichever worker, and counted once."""
    from refbench.config import load_config
    from refbench.toy.model import build_components, save_components
    from refbench.training.run import run_training

    save_components(build_components(seed=0), tmp_path / "base")
    rows = [
        {"caption": f"a red circle {n}", "jpg_0": jpeg(10 * n, 16), "jpg_1": jpeg(10 * n + 5, 16), "label_0": 1.0}
        for n in range(8)
    ]
    rows[3]["jpg_1"] = b"\xff\xd8 broken"
    pq.write_table(pa.table({k: [r[k] for r in rows] for k in rows[0]}), tmp_path / "pairs.parquet")
    config = load_config(
        method="diff-dpo",
        overrides={
            "model": {"pretrained": str(tmp_path / "base")},
            "data": {"source": str(tmp_path / "pairs.parquet"), "num_workers": 2},
            "training": {"max_steps": 6, "batch_size": 4, "lr_warmup_steps": 0, "monitor_size": 2},
        },
    )
    run_training(config, db=tmp_path / "db.duckdb", out_root=tmp_path / "runs", progress=False)
    message = Store(tmp_path / "db.duckdb").get_run("diff-dpo")["message"]
    assert "'unreadable image': 1" in message


def test_a_killed_run_shows_as_interrupted_with_how_to_resume(tmp_path):
    """A run left 'running' in the store: while a process holds its lock it is running; once the
    lock is free (its process died, as after SIGKILL) `runs` shows it interrupted and says how to
    continue."""
    import fcntl

    from refbench.training.run_folder import runs_table

    store = Store(tmp_path / "db.duckdb")
    run_dir = tmp_path / "runs" / "refdpo"
    run_dir.mkdir(parents=True)
    store.create_run(
        "refdpo", method="refdpo", preset="toy", config={}, seed=0, run_dir=str(run_dir), git_revision=None, versions={}
    )
    store.set_run_status("refdpo", "running", "")
    with open(run_dir / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        frame, hints = runs_table(tmp_path / "db.duckdb")
        assert frame["status"].tolist() == ["running"] and hints == []
    frame, hints = runs_table(tmp_path / "db.duckdb")
    assert frame["status"].tolist() == ["interrupted"] and "run_dir" not in frame.columns
    assert hints == [
        f"refdpo was killed while it trained; continue it with: refbench train --name refdpo --resume "
        f"--db {tmp_path / 'db.duckdb'} --out {tmp_path / 'runs'}"
    ]


@pytest.mark.slow
def test_an_error_on_the_main_process_ends_every_process(toy_world, tmp_path, monkeypatch, capsys):
    """Two processes (accelerate, gloo): a second launch of a finished run without --resume is
    refused by the main process's store check; both processes end with that one line instead of
    the second waiting for the first forever (the timeout would fail the test). The first run, which
    only has to exist finished, is trained by the same command in this process."""
    from cli_helpers import run_refbench

    args = [
        "train",
        "--model",
        str(toy_world / "base"),
        "--data",
        str(toy_world / "pairs.parquet"),
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        "--db",
        str(tmp_path / "db.duckdb"),
        "--out",
        str(tmp_path / "runs"),
        "--no-progress",
    ]
    code, _, err = run_refbench(monkeypatch, capsys, *args)
    assert code == 0, err[-2000:]
    launch = [*accelerate_launch(2), "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "refbench", *args]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    second = subprocess.run(launch, capture_output=True, text=True, env=environment, timeout=300)
    assert second.returncode != 0
    assert second.stderr.count("error: run 'refdpo' already exists") == 2


def test_a_hub_data_set_is_read_from_its_memory_mapped_arrow_files(tmp_path, monkeypatch):
    """A hub id goes through ``datasets.load_dataset`` (here given a local parquet file, offline),
    whose table is memory-mapped Arrow on disk: rows are zero-copy slices of it, so the loader
    holds only its index (9 bytes a pair: 30 rows, 3 ties -> 27 pairs -> 243 bytes)."""
    import datasets

    from refbench.training.data import PreferencePairs, open_pair_source
    from refbench.training.sources import TableSource

    folder = pick_a_pic_folder(tmp_path / "local", 30, 1, row_group=10)
    real_load = datasets.load_dataset

    def offline(name, split):
        assert name == "someone/pick-a-pic-like" and split == "train"
        return real_load(
            "parquet", data_files=str(folder / "train-00000.parquet"), split="train", cache_dir=str(tmp_path / "hf")
        )

    monkeypatch.setattr(datasets, "load_dataset", offline)
    source = open_pair_source("someone/pick-a-pic-like", "train")
    assert isinstance(source, TableSource)
    assert "MemoryMapped" in type(offline("someone/pick-a-pic-like", "train").data).__name__
    pairs = PreferencePairs(source, resolution=8)
    assert len(pairs) == 27 and pairs.skipped.as_dict() == {"tie": 3}
    assert pairs[0][0] == "prompt 1" and pairs.held_bytes() == 243
