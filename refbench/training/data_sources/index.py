"""Pair indexes: sets that annotate images on disk (JSON lists, per-prompt rankings) become a
parquet file of refbench rows whose images are paths (``caption``, ``image_0``, ``image_1``,
``label_0``), written once in row groups and then read lazily through ``ColumnSource``.

The annotation file is read as a stream (``iter_json_records``: a JSON array or JSON Lines, one
record at a time), so building the index holds one row group of pairs, never the whole set. The
index lives in ``$REFBENCH_DATA/pair-index`` (default ``~/.cache/refbench/pair-index``), named by
a hash of the adapter, the annotation file's path, size and modification time, and the split:
a changed file builds a new one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..sources import DataError

__all__ = ["iter_json_records", "pairs_from_ranks", "build_index", "index_folder", "INDEX_ROW_GROUP"]

INDEX_ROW_GROUP = 2_048
_CHUNK = 1 << 20
_INDEX_VERSION = "1"


def index_folder() -> Path:
    return Path(os.environ.get("REFBENCH_DATA", Path.home() / ".cache" / "refbench")) / "pair-index"


def iter_json_records(path: Path) -> Iterator[dict]:
    """The objects of a JSON array file (``[{...}, {...}]``) or of a JSON Lines file, one at a
    time, reading the file in 1 MiB pieces."""
    decoder = json.JSONDecoder()
    try:
        with open(path, encoding="utf-8") as handle:
            buffer, position, started, done = "", 0, False, False
            while not done:
                piece = handle.read(_CHUNK)
                done = not piece
                buffer = buffer[position:] + piece
                position = 0
                while True:
                    while position < len(buffer) and buffer[position] in " \t\r\n,":
                        position += 1
                    if not started and position < len(buffer):
                        started = True
                        if buffer[position] == "[":
                            position += 1
                            continue
                    if position < len(buffer) and buffer[position] == "]":
                        return
                    if position >= len(buffer):
                        break
                    try:
                        record, end = decoder.raw_decode(buffer, position)
                    except json.JSONDecodeError:
                        if done:
                            raise DataError(
                                f"{path} is not a JSON list or JSON Lines file (at character {position})"
                            ) from None
                        break  # the record goes on in the next piece
                    position = end
                    if not isinstance(record, dict):
                        raise DataError(f"{path}: expected JSON objects, found {type(record).__name__}")
                    yield record
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text (a JSON annotation file expected)") from None


def pairs_from_ranks(ranks: list) -> list[tuple[int, int, float]]:
    """Every pair (i, j), i < j, of images ranked within one prompt, as (i, j, label_0): 1 when
    image i ranks better (a lower rank number), 0 when j does, 0.5 for equal ranks (a tie).
    For ranks [1, 2, 2]: (0, 1, 1.0), (0, 2, 1.0), (1, 2, 0.5)."""
    pairs = []
    for i in range(len(ranks)):
        for j in range(i + 1, len(ranks)):
            a, b = ranks[i], ranks[j]
            pairs.append((i, j, 1.0 if a < b else 0.0 if a > b else 0.5))
    return pairs


def _key(adapter: str, files: list[Path], split: str) -> str:
    digest = hashlib.sha256(f"{_INDEX_VERSION}\x00{adapter}\x00{split}".encode())
    for path in files:
        stat = path.stat()
        digest.update(f"\x00{path.resolve()}\x00{stat.st_size}\x00{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def build_index(adapter: str, files: list[Path], split: str, rows: Iterable[tuple]) -> Path:
    """The index of ``rows`` ((caption, image_0 path, image_1 path, label_0) tuples, produced
    lazily), written once under ``index_folder()`` and reused while ``files`` are unchanged."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = index_folder() / f"{adapter}-{split}-{_key(adapter, files, split)}.parquet"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema(
        [("caption", pa.string()), ("image_0", pa.string()), ("image_1", pa.string()), ("label_0", pa.float64())]
    )
    partial = target.with_suffix(f".{os.getpid()}.partial")
    written = 0
    with pq.ParquetWriter(partial, schema) as writer:
        chunk: list[tuple] = []

        def flush() -> None:
            if chunk:
                writer.write_table(pa.Table.from_pylist([dict(zip(schema.names, r)) for r in chunk], schema=schema))
                chunk.clear()

        for row in rows:
            chunk.append(row)
            written += 1
            if len(chunk) >= INDEX_ROW_GROUP:
                flush()
        flush()
    if not written:
        partial.unlink(missing_ok=True)
        raise DataError(f"no preference pairs in {', '.join(map(str, files))} (split {split!r})")
    partial.replace(target)
    return target
