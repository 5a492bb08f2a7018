"""Where preference rows come from, read by row without holding the data set in memory.

- ``ParquetSource``: a local parquet file or a folder of them (Pick-a-Pic v2 ships as 600-odd
  files of many row groups). Screening reads only ``caption`` and ``label_0``; a row's image
  bytes come from reading its row group's three columns, and the last few row groups read
  are kept per process (``CACHED_ROW_GROUPS``), so memory is bounded by a few row groups
  whatever the number of files. Handles are opened per process (DataLoader workers fork).
- ``TableSource``: a pyarrow Table, as ``datasets`` keeps a hub data set (memory-mapped Arrow
  files on disk): a row is a zero-copy slice, so nothing is copied into memory.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import RefbenchError

__all__ = [
    "DataError",
    "REQUIRED_COLUMNS",
    "PairSource",
    "ParquetSource",
    "TableSource",
    "open_pair_source",
    "WITHDRAWN",
    "withdrawn_message",
]

REQUIRED_COLUMNS = ("caption", "jpg_0", "jpg_1", "label_0")
CACHED_ROW_GROUPS = 2
OPEN_FILES = 4
# Hub data sets that are gone: id -> the day they were withdrawn.
WITHDRAWN = {"yuvalkirstain/pickapic_v2": "2025-04-30", "yuvalkirstain/pickapic_v1": "2025-04-30"}


def withdrawn_message(name: str) -> str:
    """One line for a data set withdrawn from the Hub and not in the local cache."""
    return (
        f"{name} was withdrawn from the Hugging Face Hub on {WITHDRAWN[name]} and is not in the local cache; "
        f'use a local copy (--data DIR, or data.source = "pickapic-v2:DIR"), another source listed by '
        f"`refbench data list` (e.g. --data hpdv2:DIR), or pairs of your own from `refbench make-pairs`"
    )


class DataError(RefbenchError):
    """The preference data cannot be used at all."""


class PairSource(Protocol):
    num_rows: int

    def description(self) -> str: ...
    def scan_labels(self, batch_rows: int) -> Iterator[tuple[int, list, list]]: ...
    def read_row(self, row: int, columns: tuple[str, ...]) -> dict: ...
    def held_bytes(self) -> int: ...


class ParquetSource:
    def __init__(self, files: list[Path]):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.files = files
        counts, self._file_of_group, self._group_in_file = [], [], []
        try:
            for index, path in enumerate(files):
                metadata = pq.ParquetFile(path).metadata
                names = set(metadata.schema.names)
                missing = [c for c in REQUIRED_COLUMNS if c not in names]
                if missing:
                    raise DataError(
                        f"{path} lacks the column(s) {', '.join(missing)}; the Pick-a-Pic v2 schema needs "
                        f"{', '.join(REQUIRED_COLUMNS)}"
                    )
                for group in range(metadata.num_row_groups):
                    counts.append(metadata.row_group(group).num_rows)
                    self._file_of_group.append(index)
                    self._group_in_file.append(group)
        except (pa.ArrowException, OSError) as exc:  # not parquet, truncated
            raise DataError(f"{path} is not a readable parquet file: {str(exc).splitlines()[0]}") from None
        self._group_starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self.num_rows = int(self._group_starts[-1])
        self._handles: OrderedDict[int, object] = OrderedDict()
        self._pid = None
        self._groups: OrderedDict[int, object] = OrderedDict()  # row group -> its Table, most recent last

    def description(self) -> str:
        return "parquet:" + ";".join(f"{p.name}:{p.stat().st_size}" for p in self.files)

    def _file(self, index: int):
        import pyarrow.parquet as pq

        if self._pid != os.getpid():  # a forked worker: its own handles and cache
            self._handles, self._groups, self._pid = OrderedDict(), OrderedDict(), os.getpid()
        if index in self._handles:
            self._handles.move_to_end(index)
        else:  # a few open files at a time: Pick-a-Pic has 600-odd, each handle holds its metadata
            self._handles[index] = pq.ParquetFile(self.files[index])
            while len(self._handles) > OPEN_FILES:
                self._handles.popitem(last=False)[1].close()
        return self._handles[index]

    def scan_labels(self, batch_rows: int):
        import pyarrow.parquet as pq

        offset = 0
        for path in self.files:
            with pq.ParquetFile(path) as handle:
                for batch in handle.iter_batches(batch_size=batch_rows, columns=["caption", "label_0"]):
                    yield offset, batch.column("caption").to_pylist(), batch.column("label_0").to_pylist()
                    offset += batch.num_rows

    def read_row(self, row: int, columns: tuple[str, ...]) -> dict:
        group = int(np.searchsorted(self._group_starts, row, side="right") - 1)
        table = self._row_group(group)
        position = row - int(self._group_starts[group])
        return {name: table.column(name)[position].as_py() for name in columns}

    def _row_group(self, group: int):
        handle = self._file(self._file_of_group[group])  # (also resets the cache in a new process)
        if group in self._groups:
            self._groups.move_to_end(group)
            return self._groups[group]
        table = handle.read_row_group(self._group_in_file[group], columns=["caption", "jpg_0", "jpg_1"])
        self._groups[group] = table
        while len(self._groups) > CACHED_ROW_GROUPS:
            self._groups.popitem(last=False)
        return table

    def held_bytes(self) -> int:
        return sum(table.nbytes for table in self._groups.values()) if self._pid == os.getpid() else 0

    def __getstate__(self):  # DataLoader workers (spawn) get paths, not open handles
        state = dict(self.__dict__)
        state.update(_handles=OrderedDict(), _groups=OrderedDict(), _pid=None)
        return state


class TableSource:
    """A pyarrow Table (for a hub data set, the memory-mapped table ``datasets`` keeps)."""

    def __init__(self, table, name: str = "table"):
        missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
        if missing:
            raise DataError(
                f"{name} lacks the column(s) {', '.join(missing)}; the Pick-a-Pic v2 schema needs "
                f"{', '.join(REQUIRED_COLUMNS)}"
            )
        self.table, self.name, self.num_rows = table, name, table.num_rows

    def description(self) -> str:
        return f"table:{self.name}:{self.num_rows}"

    def scan_labels(self, batch_rows: int):
        offset = 0
        for batch in self.table.select(["caption", "label_0"]).to_batches(max_chunksize=batch_rows):
            yield offset, batch.column("caption").to_pylist(), batch.column("label_0").to_pylist()
            offset += batch.num_rows

    def read_row(self, row: int, columns: tuple[str, ...]) -> dict:
        piece = self.table.slice(row, 1)  # zero-copy
        return {name: piece.column(name)[0].as_py() for name in columns}

    def held_bytes(self) -> int:
        return 0  # memory-mapped (hub) or the caller's own table


def open_pair_source(source: str | Path, split: str = "train") -> PairSource:
    """A parquet file, a folder of parquet files (searched recursively, as the hub's ``data/``
    folders are laid out), or a hub data set id."""
    path = Path(source)
    if path.exists():
        files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
        if path.is_dir():  # hub layouts: data/train-00000-of-00645.parquet, or train/*.parquet
            in_split = [f for f in files if f.name.startswith(split) or f.relative_to(path).parts[0] == split]
            files = in_split or files
        if not files:
            raise DataError(f"no parquet files in {path}")
        return ParquetSource(files)
    if "/" in str(source) and not str(source).startswith((".", "/", "~")) and str(source).count("/") == 1:
        return TableSource(_load_hub_dataset(str(source), split), name=str(source))
    raise DataError(
        f"preference data not found: no file or folder {source} exists"
        + ("" if "/" not in str(source) else "; it is not a hub data set id (owner/name) either")
    )


def _load_hub_dataset(name: str, split: str):
    try:
        import datasets

        dataset = datasets.load_dataset(name, split=split)
    except Exception as exc:  # the hub raises many kinds; the user needs one sentence
        if name in WITHDRAWN:
            raise DataError(withdrawn_message(name)) from None
        raise DataError(
            f"no file or folder {name} exists, and as a hub data set it cannot be loaded "
            f"(split {split!r}): {str(exc).splitlines()[0]}"
        ) from None
    return dataset.data.table
