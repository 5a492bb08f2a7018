"""What a source holds (``refbench data inspect``): rows, usable pairs, ties and other skips,
caption lengths, the image sizes of a sample of usable pairs, and the schema it is read through.
The scan reads captions and labels only, batch by batch (a progress bar on request)."""

from __future__ import annotations

import io

import numpy as np

from ..data import SCAN_BATCH_ROWS, screen
from . import open_source, resolve

__all__ = ["inspect_source"]


def inspect_source(
    text: str, split: str = "train", columns: dict | None = None, *, sample: int = 8, progress: bool = False
) -> dict:
    from tqdm.auto import tqdm

    name, location = resolve(text, columns)
    source = open_source(text, split, columns)
    lengths, usable, skips = [], [], {}
    bar = tqdm(total=source.num_rows, desc=f"inspect {name}", unit="row", disable=not progress)
    for offset, captions, labels in source.scan_labels(SCAN_BATCH_ROWS):
        keep, _, counts = screen(captions, labels)
        for reason, n in counts.items():
            skips[reason] = skips.get(reason, 0) + n
        lengths.append(np.asarray([len(c) if isinstance(c, str) else 0 for c in captions], dtype=np.int32))
        if len(usable) < sample:
            usable.extend(int(offset + k) for k in keep[: sample - len(usable)])
        bar.update(len(captions))
    bar.close()
    lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int32)
    return {
        "source": name,
        "location": location,
        "split": split,
        "rows": int(source.num_rows),
        "usable_pairs": int(source.num_rows - sum(skips.values())),
        "ties": int(skips.get("tie", 0)),
        "skips": dict(sorted(skips.items())),
        "caption_chars": _stats(lengths),
        "image_sizes": _sizes(source, usable),
        "schema": _schema(source),
    }


def _stats(lengths: np.ndarray) -> dict:
    if not len(lengths):
        return {"min": 0, "median": 0.0, "mean": 0.0, "max": 0}
    return {
        "min": int(lengths.min()),
        "median": float(np.median(lengths)),
        "mean": round(float(lengths.mean()), 2),
        "max": int(lengths.max()),
    }


def _sizes(source, rows: list[int]) -> dict:
    """Width x height of the images of the sampled pairs, counted ("unreadable" for the rest)."""
    from PIL import Image

    counts: dict[str, int] = {}
    for row in rows:
        values = source.read_row(row, ("jpg_0", "jpg_1"))
        for value in values.values():
            if isinstance(value, dict):
                value = value.get("bytes")
            try:
                with Image.open(io.BytesIO(value)) as img:
                    key = f"{img.size[0]}x{img.size[1]}"
            except Exception:  # any reason PIL cannot read it
                key = "unreadable"
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _schema(source) -> dict:
    """The refbench row and the columns it is read from."""
    mapping = getattr(source, "columns", None)
    if isinstance(mapping, dict):
        return {k: v for k, v in mapping.items()}
    return {"caption": "caption", "image_0": "jpg_0", "image_1": "jpg_1", "label_0": "label_0"}
