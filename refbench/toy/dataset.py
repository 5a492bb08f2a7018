"""The toy preference data set on disk: built once, reproducibly, then reused.

The pairs come from the corruption-level generators of ``pairs.py`` plus samples of the
base model itself (as Pick-a-Pic's images came from the models of its day). Sampling
the base model is the slow part, so its images come from a committed pool
(``assets/base_samples.parquet``: every toy-train prompt x ``POOL_SEEDS`` seeds, made by
``refbench toy base-pool`` from the committed checkpoint). The pairs themselves are too
large to commit (about 25 MB of PNG): ``refbench toy pairs`` (or the first
``refbench train``) builds them in well under a minute into ``$REFBENCH_DATA/toy-pairs``
(default ``~/.cache/refbench/toy-pairs``); same seed, same bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

TRAIN_PAIRS = 20_000
VALIDATION_PAIRS = 2_000
POOL_SEEDS = 4
POOL_PATH = Path(__file__).resolve().parent / "assets" / "base_samples.parquet"


def data_root() -> Path:
    return Path(os.environ.get("REFBENCH_DATA", Path.home() / ".cache" / "refbench"))


def pairs_dir() -> Path:
    return data_root() / "toy-pairs"


def pairs_path(split: str, folder: Path | None = None) -> Path:
    return (folder or pairs_dir()) / f"{split}.parquet"


def build_base_pool(path: Path = POOL_PATH, *, seeds: int = POOL_SEEDS, progress: bool = True) -> Path:
    """Sample the committed base model on every toy-train prompt x ``seeds`` seeds (50 DDIM steps)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .model import load_components
    from .prompts import prompt_set
    from .render import to_png_bytes
    from .sampling import sample_images

    texts = [p.text for p in prompt_set("toy-train") for _ in range(seeds)]
    seed_list = [s for _ in prompt_set("toy-train") for s in range(seeds)]
    images = sample_images(load_components(), texts, seed_list, batch_size=64, progress=progress)
    table = pa.table({"caption": texts, "seed": seed_list, "png": [to_png_bytes(im) for im in images]})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")
    return path


def base_model_generator(path: Path = POOL_PATH):
    """A pairs generator drawing, for each prompt, one of the base model's pooled samples."""
    import pyarrow.parquet as pq

    from .render import from_png_bytes

    if not path.is_file():
        raise FileNotFoundError(f"no base-model sample pool at {path}; make it with `refbench toy base-pool`")
    table = pq.read_table(path)
    pool: dict[str, list[bytes]] = {}
    for caption, png in zip(table.column("caption").to_pylist(), table.column("png").to_pylist()):
        pool.setdefault(caption, []).append(png)

    def generate(prompts, rng: np.random.Generator) -> list[np.ndarray]:
        images = []
        for prompt in prompts:
            choices = pool[prompt.text]
            images.append(from_png_bytes(choices[int(rng.integers(len(choices)))]))
        return images

    return generate


def build_toy_pairs(
    folder: Path | None = None,
    *,
    train_pairs: int = TRAIN_PAIRS,
    validation_pairs: int = VALIDATION_PAIRS,
    seed: int = 0,
    with_base_samples: bool = True,
    progress: bool = True,
) -> dict[str, Path]:
    """Write ``train.parquet`` and ``validation.parquet``; returns their paths."""
    from .pairs import build_pairs, write_pairs

    folder = Path(folder or pairs_dir())
    folder.mkdir(parents=True, exist_ok=True)
    extra = {"base-model": base_model_generator()} if with_base_samples else None
    written = {}
    for split, count, split_seed in (("train", train_pairs, seed), ("validation", validation_pairs, seed + 1)):
        table = build_pairs(count, split, split_seed, extra_generators=extra)
        target = pairs_path(split, folder)
        # One partial file per process: two processes building at once (parallel runs or tests) each
        # write their own and the atomic replace leaves one whole file under the real name.
        partial = target.with_suffix(f".{os.getpid()}.partial")
        write_pairs(table, partial)
        partial.replace(target)  # never leave a half-written file under the real name
        written[split] = target
    return written


def ensure_toy_pairs(progress: bool = True) -> Path:
    """The default pairs folder, built on first use."""
    folder = pairs_dir()
    if not (pairs_path("train", folder).is_file() and pairs_path("validation", folder).is_file()):
        print(f"building the toy preference pairs once into {folder} (under a minute) ...", flush=True)
        build_toy_pairs(folder, progress=progress)
    return folder
