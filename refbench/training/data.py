"""Preference pairs in the Pick-a-Pic v2 schema, for the toy world and for real data alike.

Schema: ``caption`` (str), ``jpg_0`` / ``jpg_1`` (encoded image bytes, any format PIL
reads), ``label_0`` (1: image 0 preferred, 0: image 1 preferred, 0.5: tie). The loader
puts the winner first, drops ties, and skips rows it cannot use (empty caption, label
outside {0, 0.5, 1}, unreadable image), counting every skip by reason. A source that is
not usable at all (missing file, not parquet, missing columns, no usable rows) is one
``DataError`` before training starts.

Memory does not grow with the data set (Pick-a-Pic v2 is ~335 GB): screening reads only the
``caption`` and ``label_0`` columns, and what is kept is the usable rows' numbers and winner
side (9 bytes a pair). Captions and image bytes are read by row when a batch needs them,
from the parquet row group that holds the row (``sources.ParquetSource``, a few row groups
kept per process) or from the memory-mapped Arrow table a hub data set already is.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .sources import REQUIRED_COLUMNS, DataError, PairSource, TableSource, open_pair_source

__all__ = [
    "DataError",
    "PreferencePairs",
    "SkipCounts",
    "open_pair_source",
    "decode_image",
    "REQUIRED_COLUMNS",
    "load_preference_pairs",
    "flips",
]

# Pairs screened per scan batch: bounded memory for captions and labels while screening.
SCAN_BATCH_ROWS = 65_536


@dataclass
class SkipCounts:
    """Rows left out, by reason. Ties are not errors but are dropped and counted too."""

    counts: Counter = field(default_factory=Counter)

    def add(self, reason: str, n: int = 1) -> None:
        self.counts[reason] += n

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


def decode_image(data: bytes, size: int | None = None, *, flip: bool = False) -> np.ndarray:
    """Encoded bytes -> uint8 RGB (H, W, 3). With ``size``: the official Diffusion-DPO transform,
    through torchvision: resize the shorter side to ``size`` (bilinear, antialiased), centre crop
    to ``size`` x ``size``; ``flip`` mirrors it left to right (its RandomHorizontalFlip, with the
    coin drawn by the caller so that batches stay a function of (seed, step))."""
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Corrupt EXIF data" and the like: the image is used or skipped anyway
            with Image.open(io.BytesIO(data)) as image:
                image = image.convert("RGB")
                if size is not None and image.size != (size, size):
                    image = TF.center_crop(TF.resize(image, size, interpolation=InterpolationMode.BILINEAR), size)
                if flip:
                    image = TF.hflip(image)
                return np.asarray(image, dtype=np.uint8)
    except (
        Exception
    ) as exc:  # web data: besides OSError, PIL's plugins raise SyntaxError, struct.error, EOFError, bombs...
        raise ValueError(f"not a readable image ({type(exc).__name__})") from None


def flips(seed: int, micro_step: int, slot: int) -> tuple[bool, bool]:
    """The random horizontal flips of image 0 and image 1 of the pair in ``slot`` of a micro-batch:
    each image its own coin, as the official code transforms each image on its own."""
    coins = np.random.default_rng([seed, micro_step, slot, 0xF11B]).random(2)
    return bool(coins[0] < 0.5), bool(coins[1] < 0.5)


class PreferencePairs:
    """Usable pairs, winner first. Rows are screened on construction (labels, captions, from those
    two columns only) and images are read and decoded on access.

    ``load(i)`` returns ``(caption, winner uint8 HWC, loser uint8 HWC)`` or ``None`` for a pair
    whose image cannot be decoded, and changes nothing (DataLoader workers call it);
    ``__getitem__`` does the same and also counts the unreadable pair once in ``skipped``.
    ``fingerprint`` is a hash of the screened rows (captions, labels, source files and sizes).
    """

    def __init__(
        self,
        source: PairSource,
        *,
        resolution: int | None = None,
        max_pairs: int | None = None,
        exclude: frozenset[str] = frozenset(),
    ):
        import pyarrow as pa

        if isinstance(source, pa.Table):
            source = TableSource(source)
        self.source, self.resolution = source, resolution
        self.skipped = SkipCounts()
        rows, winner_first, kept = [], [], 0
        digest = hashlib.sha256(source.description().encode())
        for offset, captions, labels in source.scan_labels(SCAN_BATCH_ROWS):
            keep, winner, counts = screen(captions, labels, exclude)
            for reason, n in counts.items():
                self.skipped.add(reason, n)
            digest.update("\x00".join(c if isinstance(c, str) else "\x01" for c in captions).encode())
            digest.update(np.asarray(labels, dtype=np.float64).tobytes())
            if max_pairs is not None and kept + len(keep) >= max_pairs:
                room = max_pairs - kept
                last_kept = keep[room - 1]
                self._undo_skips_after(captions, labels, last_kept, exclude)
                rows.append(keep[:room] + offset)
                winner_first.append(winner[:room])
                break
            rows.append(keep + offset)
            winner_first.append(winner)
            kept += len(keep)
        self.rows = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
        self.winner_is_0 = np.concatenate(winner_first).astype(bool) if winner_first else np.zeros(0, bool)
        if not len(self.rows):
            raise DataError(
                f"no usable preference pairs (skipped: {self.skipped.as_dict() or 'none, the data is empty'})"
            )
        digest.update(self.rows.tobytes())
        self.fingerprint = digest.hexdigest()
        self._unreadable: set[int] = set()  # pairs found unreadable: counted once, not decoded again here

    def _undo_skips_after(self, captions, labels, last_kept: int, exclude: frozenset[str]) -> None:
        """With ``max_pairs``, rows after the last kept one were screened but are not part of the
        data: their skips are not counted (as a row-by-row screen that stops there would do)."""
        _, _, later = screen(captions[last_kept + 1 :], labels[last_kept + 1 :], exclude)
        for reason, n in later.items():
            self.skipped.counts[reason] -= n
            if not self.skipped.counts[reason]:
                del self.skipped.counts[reason]

    def __len__(self) -> int:
        return len(self.rows)

    def caption(self, index: int) -> str:
        return self.source.read_row(int(self.rows[index]), ("caption",))["caption"]

    def load(self, index: int, flip: tuple[bool, bool] = (False, False)):
        """(caption, winner, loser) decoded at ``resolution`` (images 0 and 1 flipped as ``flip``
        says), or None if an image is unreadable."""
        row = self.source.read_row(int(self.rows[index]), ("caption", "jpg_0", "jpg_1"))
        first, second = row["jpg_0"], row["jpg_1"]
        if isinstance(first, dict):  # datasets' Image feature stores {"bytes", "path"}
            first, second = first.get("bytes"), second.get("bytes")
        try:
            image_0 = decode_image(first, self.resolution, flip=flip[0])
            image_1 = decode_image(second, self.resolution, flip=flip[1])
        except ValueError:
            return None
        if self.winner_is_0[index]:
            return row["caption"], image_0, image_1
        return row["caption"], image_1, image_0

    def note_unreadable(self, index: int) -> None:
        """Count an unreadable pair once, whichever process or worker found it."""
        if index not in self._unreadable:
            self._unreadable.add(index)
            self.skipped.add("unreadable image")

    def __getitem__(self, index: int):
        if index in self._unreadable:
            return None
        item = self.load(index)
        if item is None:
            self.note_unreadable(index)
        return item

    def held_bytes(self) -> int:
        """What this object keeps in memory: the row index and the source's row-group cache."""
        return self.rows.nbytes + self.winner_is_0.nbytes + self.source.held_bytes()

    def check_readable(self, probe: int = 32) -> None:
        """One DataError before training if none of the first ``probe`` pairs has readable images
        (a wrong image column, a data set of broken files); some unreadable pairs are skips."""
        if all(self[i] is None for i in range(min(probe, len(self)))):
            raise DataError(
                f"none of the first {min(probe, len(self))} usable pairs has readable images in jpg_0 and "
                f"jpg_1 (encoded image bytes expected)"
            )

    @staticmethod
    def collate(items):
        """Stack usable pairs: captions list, winners and losers as uint8 arrays (N, H, W, 3)."""
        items = [item for item in items if item is not None]
        if not items:
            return None
        captions, winners, losers = zip(*items)
        return list(captions), np.stack(winners), np.stack(losers)


def screen(
    captions: list, labels: list, exclude: frozenset[str] = frozenset()
) -> tuple[np.ndarray, np.ndarray, Counter]:
    """Positions of the usable rows, whether image 0 wins there, and the skips by reason (a caption
    in ``exclude``, e.g. a validation prompt, is a skip too)."""
    counts: Counter = Counter()
    keep, winner = [], []
    for index, (caption, label) in enumerate(zip(captions, labels)):
        if not isinstance(caption, str) or not caption.strip():
            counts["empty caption"] += 1
        elif caption in exclude:
            counts["held-out prompt"] += 1
        elif label not in (0, 0.5, 1):  # None and NaN too
            counts["label outside {0, 0.5, 1}"] += 1
        elif label == 0.5:
            counts["tie"] += 1
        else:
            keep.append(index)
            winner.append(label == 1)
    return np.asarray(keep, dtype=np.int64), np.asarray(winner, dtype=bool), counts


def load_preference_pairs(config):
    """The usable pairs of a run config's ``data`` (the toy pairs are built on first use)."""
    source = config.data.source
    if source == "toy":
        from ..toy.dataset import ensure_toy_pairs, pairs_path

        source = str(pairs_path(config.data.split, ensure_toy_pairs()))
    from .data_sources import open_source

    return PreferencePairs(
        open_source(source, config.data.split, config.data.columns),
        resolution=config.model.resolution,
        max_pairs=config.data.max_pairs,
        exclude=excluded_prompts(config.data.exclude_prompts),
    )


def excluded_prompts(name: str | None) -> frozenset[str]:
    """The prompts of ``data.exclude_prompts``: a built-in toy prompt set, or a text file with one
    prompt per line (e.g. an evaluation set that must stay out of training)."""
    if name is None:
        return frozenset()
    from ..toy.prompts import PROMPT_SETS, prompt_set

    if name in PROMPT_SETS:
        return frozenset(p.text for p in prompt_set(name))
    path = Path(name).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise DataError(
            f"data.exclude_prompts: {name!r} is neither a toy prompt set ({', '.join(PROMPT_SETS)}) "
            f"nor a readable text file of prompts ({reason})"
        ) from None
    return frozenset(line.strip() for line in lines if line.strip())
