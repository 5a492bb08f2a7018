"""Pick-a-Pic at scale, measured: memory and start-up against the data set's size, decoding
throughput by number of DataLoader workers, and the step with the on-disk latent cache.

    python benchmarks/data_scale.py [--out benchmarks/data_scale.json] [--root /tmp/data-scale]
        [--old-tree PATH]   also run the same trainings with another checkout (before/after)

What it does, all on a tiny random-weight SD1.5 pipeline (``refbench.tiny``) under the sd15
preset at 16 px:
1. writes Pick-a-Pic-schema folders of 10,000 and 80,000 rows (32 px noise JPEGs, files of
   5,000 rows in row groups of 500, a tie every tenth row) and one of 1,000,000 rows whose
   images are one repeated JPEG (for the start-up scan only);
2. peak RSS of `refbench train --preset sd15 --max-steps 3` on each folder (a fresh process
   each, measured as its own ru_maxrss), with and without a latent cache built by
   `refbench cache-latents`, and wall seconds of a 1-step run (start-up to the first step);
   and the peak RSS of a process that only screens the folder and reads 64 pairs (the
   data's own footprint: a training process's peak is dominated by importing torch);
3. seconds to screen the 1,000,000 rows (caption and label columns only);
4. pairs decoded per second through the DataLoader with 0, 1 and 2 workers;
5. seconds per optimizer step (batch 8) with the disk cache and without, interleaved.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def jpeg(rng: np.random.Generator, size: int = 32) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_folder(
    folder: Path, rows: int, *, per_file: int = 5_000, row_group: int = 500, repeat_image: bool = False
) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if (folder / "done").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(rows)
    one = jpeg(rng)
    for start in range(0, rows, per_file):
        numbers = range(start, min(rows, start + per_file))
        first = [one if repeat_image else jpeg(rng) for _ in numbers]
        second = [one if repeat_image else jpeg(rng) for _ in numbers]
        table = pa.table(
            {
                "caption": [f"a photo of thing {n % 5_000}" for n in numbers],
                "jpg_0": first,
                "jpg_1": second,
                "label_0": [0.5 if n % 10 == 0 else float(n % 2) for n in numbers],
            }
        )
        pq.write_table(
            table,
            folder / f"train-{start // per_file:05d}.parquet",
            row_group_size=row_group,
            use_dictionary=["caption"],
        )
    (folder / "done").write_text("")
    return folder


def measured(command: list[str], env: dict | None = None) -> dict:
    """Run ``command`` in a fresh process through a wrapper that reports its child's peak RSS."""
    wrapper = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "code = subprocess.run(sys.argv[1:]).returncode; "
        "print('RESULT', code, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    # The working folder comes first on sys.path: run another tree's code from inside that tree.
    cwd = (env or {}).get("PYTHONPATH")
    out = subprocess.run(
        [sys.executable, "-c", wrapper, *command],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )
    line = [text for text in out.stdout.splitlines() if text.startswith("RESULT")][-1].split()
    if int(line[1]) != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{out.stderr[-2000:]}")
    return {"seconds": round(float(line[2]), 2), "peak_rss_mb": round(int(line[3]) / 1024, 1)}


def train_command(
    python: str, model: Path, data: Path, root: Path, name: str, steps: int, config: Path | None = None, batch: int = 2
) -> list[str]:
    command = [
        python,
        "-m",
        "refbench",
        "train",
        "--preset",
        "sd15",
        "--model",
        str(model),
        "--data",
        str(data),
        "--resolution",
        "16",
        "--max-steps",
        str(steps),
        "--batch-size",
        str(batch),
        "--accumulation",
        "1",
        "--name",
        name,
        "--db",
        str(root / "bench.duckdb"),
        "--out",
        str(root / "runs"),
        "--no-progress",
    ]
    return command + (["--config", str(config)] if config else [])


def cache_config(root: Path, cache: Path) -> Path:
    path = root / f"{cache.name}.json"
    path.write_text(json.dumps({"data": {"latent_cache": str(cache), "latent_dtype": "float16", "random_flip": False}}))
    return path


LOADER = """
import resource, sys, time
import numpy as np
folder, old = sys.argv[1], sys.argv[2] == "old"
started = time.perf_counter()
if old:  # the loader before the data issue: every parquet file read into memory
    from refbench.data import PreferencePairs, load_pairs_table
    pairs = PreferencePairs(load_pairs_table(folder), resolution=16)
else:
    from refbench.training.data import PreferencePairs, open_pair_source
    pairs = PreferencePairs(open_pair_source(folder), resolution=16)
screened = time.perf_counter() - started
for index in np.random.default_rng(0).choice(len(pairs), 64, replace=False):
    pairs[int(index)]
print("screened in", round(screened, 2), "s")
"""


def loader_only(data: Path, tree: Path | None = None) -> dict:
    """Peak RSS of a process that only screens the folder and reads 64 random pairs (no torch
    model): the data's own footprint, without the ~1 GB that importing torch and diffusers costs.
    Measured through the same small wrapper as the trainings: a process forked from this one
    would start with its peak RSS (Linux keeps the high-water mark across fork and exec)."""
    return measured(
        [sys.executable, "-c", LOADER, str(data), "old" if tree else "new"], {"PYTHONPATH": str(tree)} if tree else None
    )


def decode_rate(data: Path, workers: int, batches: int = 40, batch: int = 32) -> float:
    from refbench.training.batches import decoded_pair_loader
    from refbench.training.data import PreferencePairs, open_pair_source

    pairs = PreferencePairs(open_pair_source(data), resolution=16)
    order = np.random.default_rng(0).permutation(len(pairs))[: batches * batch].reshape(batches, batch).tolist()
    loader = decoded_pair_loader(pairs, order, num_workers=workers)
    started, count = time.perf_counter(), 0
    for item in loader:
        count += len(item["indices"]) + len(item["unreadable"])
    return count / (time.perf_counter() - started)


def step_seconds(store: Path, name: str) -> float:
    import duckdb

    rows = (
        duckdb.connect(str(store), read_only=True)
        .execute("select step, seconds from train_metrics where run = ? order by step", [name])
        .fetchall()
    )
    return (rows[-1][1] - rows[1][1]) / (len(rows) - 2)  # steps after the first (warm)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, default=Path("/tmp/refbench-data-scale"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/data_scale.json"))
    parser.add_argument("--old-tree", type=Path, default=None, help="a checkout to compare (PYTHONPATH)")
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    from refbench.tiny import build_tiny_pipeline

    root = args.root
    root.mkdir(parents=True, exist_ok=True)
    model = root / "sd15-tiny"
    if not (model / "unet").is_dir():
        build_tiny_pipeline(model)
    folders = {rows: write_folder(root / f"rows-{rows}", rows) for rows in (10_000, 80_000)}
    result: dict = {
        "folders": {
            rows: {
                "rows": rows,
                "mb_on_disk": round(sum(f.stat().st_size for f in folder.glob("*.parquet")) / 2**20, 1),
            }
            for rows, folder in folders.items()
        }
    }
    python = sys.executable
    for rows, folder in folders.items():
        entry = result["folders"][rows]
        cache = root / f"cache-{rows}"
        shutil.rmtree(cache, ignore_errors=True)  # time a whole build
        made = measured(
            [
                python,
                "-m",
                "refbench",
                "cache-latents",
                "--preset",
                "sd15",
                "--model",
                str(model),
                "--data",
                str(folder),
                "--resolution",
                "16",
                "--out",
                str(cache),
                "--no-progress",
            ]
        )
        entry["cache_build"] = made
        entry["cache_mb"] = round(sum(f.stat().st_size for f in cache.glob("*")) / 2**20, 1)
        entry["train_3_steps"] = measured(
            train_command(python, model, folder, root, f"plain-{rows}-{time.time_ns()}", 3)
        )
        entry["train_3_steps_cache"] = measured(
            train_command(python, model, folder, root, f"cache-{rows}-{time.time_ns()}", 3, cache_config(root, cache))
        )
        entry["startup_1_step"] = measured(
            train_command(python, model, folder, root, f"one-{rows}-{time.time_ns()}", 1)
        )
        entry["loader_only"] = loader_only(folder)
        if args.old_tree:
            env = {"PYTHONPATH": str(args.old_tree)}
            entry["old_loader_only"] = loader_only(folder, args.old_tree)
            entry["old_train_3_steps"] = measured(
                train_command(python, model, folder, root, f"old-{rows}-{time.time_ns()}", 3), env
            )
            entry["old_startup_1_step"] = measured(
                train_command(python, model, folder, root, f"old1-{rows}-{time.time_ns()}", 1), env
            )
        print(json.dumps({rows: entry}), flush=True)
    big = write_folder(root / "rows-1000000", 1_000_000, per_file=100_000, row_group=1_000, repeat_image=True)
    from refbench.training.data import PreferencePairs, open_pair_source

    started = time.perf_counter()
    pairs = PreferencePairs(open_pair_source(big))
    result["screen_1m_rows"] = {
        "seconds": round(time.perf_counter() - started, 2),
        "pairs": len(pairs),
        "skipped": pairs.skipped.as_dict(),
        "index_mb": round(pairs.held_bytes() / 2**20, 2),
    }
    print(json.dumps(result["screen_1m_rows"]), flush=True)
    rates = {w: [] for w in (0, 1, 2)}
    for _ in range(args.repetitions):  # interleaved: the machine's noise hits every setting alike
        for workers in rates:
            rates[workers].append(decode_rate(folders[10_000], workers))
    result["pairs_decoded_per_second"] = {w: round(float(np.median(r)), 1) for w, r in rates.items()}
    print(json.dumps(result["pairs_decoded_per_second"]), flush=True)
    timings = {"cache": [], "plain": []}
    for repetition in range(args.repetitions):
        for kind in timings:
            name = f"step-{kind}-{repetition}-{time.time_ns()}"
            config = cache_config(root, root / "cache-10000") if kind == "cache" else None
            measured(train_command(python, model, folders[10_000], root, name, 8, config, batch=8))
            timings[kind].append(step_seconds(root / "bench.duckdb", name))
    result["step_seconds_batch_8"] = {k: round(float(np.median(v)), 4) for k, v in timings.items()}
    result["step_cache_over_plain"] = round(
        float(np.median(np.array(timings["cache"]) / np.array(timings["plain"]))), 3
    )
    result["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
