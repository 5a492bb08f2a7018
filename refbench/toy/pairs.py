"""Toy Pick-a-Pic: preference pairs labelled by a hidden "human" oracle.

Each pair shows two images for the same toy-train prompt, each from a
"generator" drawn uniformly (with replacement, so same-generator pairs occur as
in Pick-a-Pic): corrupted renders at fixed levels, plus optional extra
generators (e.g. samples of the base diffusion model). The label is a
Bradley-Terry draw on the ``human`` oracle reward h:

    tie with probability  TIE_MAX * exp(-|h0 - h1| / TIE_SCALE)   -> label_0 = 0.5
    otherwise             P(label_0 = 1) = sigmoid((h0 - h1) / TEMPERATURE)

Columns follow the Pick-a-Pic v2 schema (``caption``, ``jpg_0``, ``jpg_1``,
``label_0``; the images are PNG bytes although the name says jpg) plus
``generator_0``, ``generator_1``, ``human_0``, ``human_1``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .oracle import analyse
from .prompts import ToyPrompt, prompt_set
from .render import render_web, to_png_bytes

Generator = Callable[[list[ToyPrompt], np.random.Generator], list[np.ndarray]]

LEVELS: tuple[float, ...] = (0.1, 0.3, 0.5, 0.8)
SPLITS: dict[str, int] = {"train": 0, "validation": 1}  # split -> seed stream
PROMPT_SET = "toy-train"  # both splits use training prompts (as Pick-a-Pic train/validation)
TEMPERATURE = 0.08  # human scores span ~0.3-0.95; a 0.1 gap gives p = 0.78, 0.2 gives 0.92
TIE_MAX = 0.8  # with TIE_SCALE: ~9 % ties overall (Pick-a-Pic v2: ~11 %)
TIE_SCALE = 0.04

SCHEMA = pa.schema(
    [
        ("caption", pa.string()),
        ("jpg_0", pa.binary()),
        ("jpg_1", pa.binary()),
        ("label_0", pa.float64()),
        ("generator_0", pa.string()),
        ("generator_1", pa.string()),
        ("human_0", pa.float64()),
        ("human_1", pa.float64()),
    ]
)


def level_generator(level: float) -> Generator:
    """Corrupted renders at a fixed corruption level."""

    def gen(prompts: list[ToyPrompt], rng: np.random.Generator) -> list[np.ndarray]:
        return [render_web(p, rng, level=level) for p in prompts]

    return gen


def default_generators() -> dict[str, Generator]:
    return {f"level-{lv}": level_generator(lv) for lv in LEVELS}


def bt_labels(h0: np.ndarray, h1: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bradley-Terry labels with ties: 1.0 (image 0 preferred), 0.0 or 0.5 (tie)."""
    delta = np.asarray(h0, float) - np.asarray(h1, float)
    u_tie, u_pref = rng.random(len(delta)), rng.random(len(delta))  # fixed draws per pair
    p0 = 1.0 / (1.0 + np.exp(-delta / TEMPERATURE))
    labels = np.where(u_pref < p0, 1.0, 0.0)
    return np.where(u_tie < TIE_MAX * np.exp(-np.abs(delta) / TIE_SCALE), 0.5, labels)


def _check_images(name: str, images: list[np.ndarray], n: int) -> np.ndarray:
    if len(images) != n:
        raise ValueError(f"generator {name!r} returned {len(images)} images for {n} prompts")
    arr = np.stack([np.asarray(im) for im in images]) if n else np.zeros((0, 16, 16, 3), np.uint8)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"generator {name!r} must return uint8 (H, W, 3) images, got {arr.dtype} {arr.shape[1:]}")
    return arr


def build_pairs(
    n_pairs: int,
    split: str,
    seed: int,
    extra_generators: dict[str, Generator] | None = None,
) -> pa.Table:
    """``n_pairs`` labelled pairs; same arguments -> same table, byte for byte."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if n_pairs < 0:
        raise ValueError(f"n_pairs must be >= 0, got {n_pairs}")
    gens = default_generators()
    for name, fn in (extra_generators or {}).items():
        if name in gens:
            raise ValueError(f"extra generator {name!r} clashes with a built-in generator")
        gens[name] = fn
    names = list(gens)
    root = np.random.SeedSequence([seed, SPLITS[split]])
    assign_rng, label_rng = (np.random.default_rng(s) for s in root.spawn(2))

    prompts = prompt_set(PROMPT_SET)
    pidx = assign_rng.integers(0, len(prompts), size=n_pairs)
    gidx = assign_rng.integers(0, len(names), size=(n_pairs, 2))  # column = side of the pair
    captions = [prompts[i].text for i in pidx]

    png = np.empty((n_pairs, 2), dtype=object)
    human = np.zeros((n_pairs, 2))
    for g, name in enumerate(names):
        # slots of this generator, in (pair, side) order; own rng keyed by the name so
        # adding a generator does not change how the others draw
        rows, sides = np.nonzero(gidx == g)
        if not len(rows):
            continue
        key = [int(b) for b in name.encode()]
        rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], 2, *key]))
        images = _check_images(name, gens[name]([prompts[pidx[i]] for i in rows], rng), len(rows))
        human[rows, sides] = analyse(images, [captions[i] for i in rows])["human"]
        png[rows, sides] = [to_png_bytes(im) for im in images]

    labels = bt_labels(human[:, 0], human[:, 1], label_rng)
    meta = {
        "seed": seed,
        "split": split,
        "generators": names,
        "prompt_set": PROMPT_SET,
        "temperature": TEMPERATURE,
        "tie_max": TIE_MAX,
        "tie_scale": TIE_SCALE,
    }
    return pa.table(
        {
            "caption": pa.array(captions, pa.string()),
            "jpg_0": pa.array(list(png[:, 0]), pa.binary()),
            "jpg_1": pa.array(list(png[:, 1]), pa.binary()),
            "label_0": pa.array(labels, pa.float64()),
            "generator_0": pa.array([names[g] for g in gidx[:, 0]], pa.string()),
            "generator_1": pa.array([names[g] for g in gidx[:, 1]], pa.string()),
            "human_0": pa.array(human[:, 0], pa.float64()),
            "human_1": pa.array(human[:, 1], pa.float64()),
        },
        schema=SCHEMA.with_metadata({"refbench.toy_pairs": json.dumps(meta, sort_keys=True)}),
    )


def write_pairs(table: pa.Table, path: str | Path) -> Path:
    """Write a pairs table to parquet (deterministic bytes for a given table)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")
    return path


def read_pairs(path: str | Path) -> pa.Table:
    """Read a pairs parquet file; a missing column is a ValueError."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ValueError(f"cannot read pairs parquet {str(path)!r}: {exc}") from None
    missing = [f.name for f in SCHEMA if f.name not in table.column_names]
    if missing:
        raise ValueError(f"{str(path)!r} is not a toy pairs file: missing columns {', '.join(missing)}")
    return table
