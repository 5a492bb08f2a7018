"""Tiny local copies of each named data source, in its own layout, with small images made here."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

PROMPTS = ["a red cube on grass", "a blue sphere in snow", "a green cone at dusk", "a white ring on sand"]


def image(seed: int, size: int = 24, fmt: str = "PNG") -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def write_image(path: Path, seed: int, size: int = 24) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image(seed, size, "JPEG" if path.suffix == ".jpg" else "PNG"))
    return path.name


def hpdv2(root: Path, pairs: int = 8) -> Path:
    """train.json: `pairs` records of two images, human_preference [1, 0] or [0, 1] alternately;
    test.json: one prompt of 3 images ranked [1, 2, 2] (2 pairs and a tie)."""
    train = []
    for n in range(pairs):
        a, b = f"{n:05d}_a.jpg", f"{n:05d}_b.png"
        write_image(root / "train" / a, 2 * n)
        write_image(root / "train" / b, 2 * n + 1, size=20)
        train.append(
            {"human_preference": [1, 0] if n % 2 == 0 else [0, 1], "prompt": PROMPTS[n % 4], "file_path": [a, b]}
        )
    (root / "train.json").write_text(json.dumps(train, indent=1))
    names = [write_image(root / "test" / f"t{k}.png", 100 + k) for k in range(3)]
    test = [{"prompt": PROMPTS[0], "image_path": names, "rank": [1, 2, 2], "raw_annotations": []}]
    (root / "test.json").write_text(json.dumps(test))
    return root


def hpdv3(root: Path, pairs: int = 8) -> Path:
    """train.json: path1 (preferred) and path2 under images/."""
    records = []
    for n in range(pairs):
        one = write_image(root / "images" / f"{n}_1.png", 300 + 2 * n)
        two = write_image(root / "images" / f"{n}_2.png", 301 + 2 * n)
        records.append(
            {"prompt": PROMPTS[n % 4], "path1": f"images/{one}", "path2": f"images/{two}", "confidence": 0.97}
        )
    (root / "train.json").write_text("\n".join(json.dumps(r) for r in records))  # JSON Lines works too
    return root


def imagerewarddb(root: Path, ranks=((1, 2, 2), (3, 1, 2, 4))) -> Path:
    """metadata-train.parquet: one group per entry of `ranks` (prompt_id, rank, image_path under
    images/train/train_1/); ranks [1, 2, 2] give 3 rows (2 pairs, 1 tie), [3, 1, 2, 4] give 6."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for g, group in enumerate(ranks):
        for k, rank in enumerate(group):
            rel = f"images/train/train_1/{g}-{k}.webp.png"
            write_image(root / rel, 500 + 10 * g + k)
            rows.append(
                {
                    "image_path": rel,
                    "prompt_id": f"{g:06d}-0001",
                    "prompt": PROMPTS[g % 4],
                    "classification": "Outdoor Scenes",
                    "image_amount_in_total": len(group),
                    "rank": rank,
                    "overall_rating": 5,
                    "image_text_alignment_rating": 5,
                    "fidelity_rating": 5,
                }
            )
    pq.write_table(pa.Table.from_pylist(rows), root / "metadata-train.parquet")
    return root


def open_image_preferences(root: Path, pairs: int = 8) -> Path:
    """data/train-00000-of-00001.parquet: prompt, chosen, rejected as Image structs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "data").mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "id": [str(n) for n in range(pairs)],
            "prompt": [PROMPTS[n % 4] for n in range(pairs)],
            "chosen": [{"bytes": image(700 + n), "path": None} for n in range(pairs)],
            "rejected": [{"bytes": image(800 + n), "path": None} for n in range(pairs)],
            "chosen_model": ["dev"] * pairs,
            "rejected_model": ["sd"] * pairs,
        }
    )
    pq.write_table(table, root / "data" / "train-00000-of-00001.parquet", row_group_size=4)
    return root


def mapped_parquet(path: Path, pairs: int = 8) -> Path:
    """Columns prompt, good, bad (bytes) and a score column: 1 (good preferred), 0, and a tie at n=3."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "prompt": [PROMPTS[n % 4] for n in range(pairs)],
            "good": [image(900 + n) for n in range(pairs)],
            "bad": [image(950 + n) for n in range(pairs)],
            "score": [0.5 if n == 3 else float(n % 2 == 0) for n in range(pairs)],
        }
    )
    pq.write_table(table, path, row_group_size=4)
    return path
