"""Preference pairs in the Pick-a-Pic v2 schema, for the toy world and for real data alike.

Schema: ``caption`` (str), ``jpg_0`` / ``jpg_1`` (encoded image bytes, any format PIL
reads), ``label_0`` (1: image 0 preferred, 0: image 1 preferred, 0.5: tie). The loader
puts the winner first, drops ties, and skips rows it cannot use (empty caption, label
outside {0, 0.5, 1}, unreadable image), counting every skip by reason. A source that is
not usable at all (missing file, not parquet, missing columns, no usable rows) is one
``DataError`` before training starts.
"""

from __future__ import annotations

import io
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import RefbenchError

__all__ = ["DataError", "PreferencePairs", "SkipCounts", "load_pairs_table", "decode_image", "REQUIRED_COLUMNS"]

REQUIRED_COLUMNS = ("caption", "jpg_0", "jpg_1", "label_0")


class DataError(RefbenchError):
    """The preference data cannot be used at all."""


@dataclass
class SkipCounts:
    """Rows left out, by reason. Ties are not errors but are dropped and counted too."""

    counts: Counter = field(default_factory=Counter)

    def add(self, reason: str, n: int = 1) -> None:
        self.counts[reason] += n

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


def decode_image(data: bytes, size: int | None = None) -> np.ndarray:
    """Encoded bytes -> uint8 RGB (H, W, 3), resized (bicubic) and centre-cropped to ``size`` if given."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Corrupt EXIF data" and the like: the image is used or skipped anyway
            with Image.open(io.BytesIO(data)) as image:
                image = image.convert("RGB")
                if size is not None and image.size != (size, size):
                    scale = size / min(image.size)
                    resized = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))), Image.BICUBIC)
                    left, top = (resized.width - size) // 2, (resized.height - size) // 2
                    image = resized.crop((left, top, left + size, top + size))
                return np.asarray(image, dtype=np.uint8)
    except Exception as exc:  # web data: besides OSError, PIL's plugins raise SyntaxError, struct.error, EOFError, bombs...
        raise ValueError(f"not a readable image ({type(exc).__name__})") from None


def load_pairs_table(source: str | Path, split: str = "train"):
    """A pyarrow Table from a parquet file, a folder of parquet files, or a hub dataset id."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(source)
    if path.exists():
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        if not files:
            raise DataError(f"no parquet files in {path}")
        try:
            table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
        except (pa.ArrowException, OSError) as exc:  # not parquet, truncated, or parts with clashing schemas
            raise DataError(f"{path} is not a readable parquet file: {str(exc).splitlines()[0]}") from None
    elif "/" in str(source) and not str(source).startswith((".", "/")):
        table = _load_hub_dataset(str(source), split)
    else:
        raise DataError(f"preference data not found: {source}")
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{source} lacks the column(s) {', '.join(missing)}; the Pick-a-Pic v2 schema needs {', '.join(REQUIRED_COLUMNS)}")
    return table.select(list(REQUIRED_COLUMNS))


def _load_hub_dataset(name: str, split: str):
    try:
        import datasets

        dataset = datasets.load_dataset(name, split=split)
    except Exception as exc:  # the hub raises many kinds; the user needs one sentence
        raise DataError(f"cannot load the dataset {name!r} (split {split!r}): {str(exc).splitlines()[0]}") from None
    return dataset.data.table


class PreferencePairs:
    """Usable pairs, winner first. Rows are screened on load (labels, captions) and images on access.

    ``__getitem__`` returns ``(caption, winner uint8 HWC, loser uint8 HWC)`` or ``None`` for a
    pair whose image cannot be decoded (counted in ``skipped``); ``collate`` drops the Nones.
    """

    def __init__(self, table, *, resolution: int | None = None, max_pairs: int | None = None):
        self.resolution = resolution
        self.skipped = SkipCounts()
        captions = table.column("caption").to_pylist()
        labels = table.column("label_0").to_pylist()
        keep, winner_first = [], []
        for index, (caption, label) in enumerate(zip(captions, labels)):
            if not isinstance(caption, str) or not caption.strip():
                self.skipped.add("empty caption")
            elif label not in (0, 0.5, 1):
                self.skipped.add("label outside {0, 0.5, 1}")
            elif label == 0.5:
                self.skipped.add("tie")
            else:
                keep.append(index)
                winner_first.append(label == 1)
            if max_pairs is not None and len(keep) >= max_pairs:
                break
        if not keep:
            raise DataError(f"no usable preference pairs (skipped: {self.skipped.as_dict() or 'none, the data is empty'})")
        self._table = table.take(keep)
        self._winner_is_0 = np.asarray(winner_first)
        self.captions = [captions[i] for i in keep]
        self._unreadable: set[int] = set()  # pairs found unreadable: counted once, not decoded again

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int):
        if index in self._unreadable:
            return None
        row = self._table.slice(index, 1)
        first, second = row.column("jpg_0")[0].as_py(), row.column("jpg_1")[0].as_py()
        if isinstance(first, dict):  # datasets' Image feature stores {"bytes", "path"}
            first, second = first.get("bytes"), second.get("bytes")
        try:
            image_0, image_1 = decode_image(first, self.resolution), decode_image(second, self.resolution)
        except ValueError:
            self._unreadable.add(index)
            self.skipped.add("unreadable image")
            return None
        if self._winner_is_0[index]:
            return self.captions[index], image_0, image_1
        return self.captions[index], image_1, image_0

    def check_readable(self, probe: int = 32) -> None:
        """One DataError before training if none of the first ``probe`` pairs has readable images
        (a wrong image column, a data set of broken files); some unreadable pairs are skips."""
        if all(self[i] is None for i in range(min(probe, len(self)))):
            raise DataError(f"none of the first {min(probe, len(self))} usable pairs has readable images in jpg_0 and "
                            f"jpg_1 (encoded image bytes expected)")

    @staticmethod
    def collate(items):
        """Stack usable pairs: captions list, winners and losers as uint8 arrays (N, H, W, 3)."""
        items = [item for item in items if item is not None]
        if not items:
            return None
        captions, winners, losers = zip(*items)
        return list(captions), np.stack(winners), np.stack(losers)
