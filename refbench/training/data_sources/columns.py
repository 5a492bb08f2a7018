"""Preference rows read from parquet files whose columns are named otherwise than Pick-a-Pic's.

``ColumnSource`` is a ``PairSource`` over parquet files and a mapping of refbench's row
(``caption``, ``jpg_0``, ``jpg_1``, ``label_0``) onto their columns. An image column may hold
encoded bytes, ``datasets``' Image struct (``{"bytes", "path"}``) or a path to an image file
(relative to ``root``). The label is a column in Pick-a-Pic's convention (1: image 0 preferred,
0: image 1, 0.5: tie) or a rule: ``preferred = "image_0"`` (or ``"image_1"``) for sets that
store the chosen image in one column. Reading is lazy, as ``sources.ParquetSource``: screening
reads the caption and label columns batch by batch, and a row's images come from its row group
(the last few kept per process), so memory does not grow with the number of rows.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..sources import DataError

__all__ = ["ColumnSource", "COLUMN_KEYS", "image_bytes", "parquet_files"]

COLUMN_KEYS = ("caption", "image_0", "image_1", "label_0", "preferred")
CACHED_ROW_GROUPS = 2
OPEN_FILES = 4


def parquet_files(path: Path, split: str) -> list[Path]:
    """A parquet file, or the parquet files of a folder (recursively), those of ``split`` when
    the names say (``train-00000-of-00002.parquet``, ``train/...``)."""
    if not path.exists():
        raise DataError(f"preference data not found: no file or folder {path} exists")
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if path.is_dir():
        in_split = [f for f in files if f.name.startswith(split) or f.relative_to(path).parts[0] == split]
        files = in_split or files
    if not files:
        raise DataError(f"no parquet files in {path}")
    return files


def image_bytes(value, root: Path | None) -> bytes:
    """Encoded image bytes from a column's value: bytes as they are, an Image struct's bytes (or
    its path), or a file path read from disk. Nothing readable gives b"" (an unreadable image)."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str) and value:
        path = Path(value) if root is None else root / value
        try:
            return path.read_bytes()
        except OSError:
            return b""
    return b""


class ColumnSource:
    """Parquet files read through a column mapping (see the module's docstring)."""

    def __init__(self, files: list[Path], columns: dict, *, root: Path | None = None, name: str = "parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.files, self.root, self.name = list(files), root, name
        self.columns = dict(columns)
        self.preferred = self.columns.get("preferred")
        needed = [self.columns[k] for k in ("caption", "image_0", "image_1")]
        needed += [self.columns["label_0"]] if "label_0" in self.columns else []
        counts, self._file_of_group, self._group_in_file = [], [], []
        try:
            for index, path in enumerate(self.files):
                with pq.ParquetFile(path) as handle:
                    metadata, names = handle.metadata, handle.schema_arrow.names
                missing = [c for c in needed if c not in names]
                if missing:
                    hint = "" if name == "parquet" else "; the parquet source reads it through data.columns"
                    raise DataError(
                        f"{path} lacks the column(s) {', '.join(missing)} that the {name} source reads "
                        f"(it has {', '.join(names)}){hint}"
                    )
                for group in range(metadata.num_row_groups):
                    counts.append(metadata.row_group(group).num_rows)
                    self._file_of_group.append(index)
                    self._group_in_file.append(group)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path} is not a readable parquet file: {str(exc).splitlines()[0]}") from None
        self._group_starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self.num_rows = int(self._group_starts[-1])
        self._handles: OrderedDict[int, object] = OrderedDict()
        self._groups: OrderedDict[int, object] = OrderedDict()
        self._pid = None

    def description(self) -> str:
        mapping = ",".join(f"{k}={v}" for k, v in sorted(self.columns.items()))
        return f"{self.name}[{mapping}]:" + ";".join(f"{p.name}:{p.stat().st_size}" for p in self.files)

    def _labels(self, batch) -> list:
        if self.preferred is not None:
            return [1.0 if self.preferred == "image_0" else 0.0] * batch.num_rows
        return batch.column(self.columns["label_0"]).to_pylist()

    def scan_labels(self, batch_rows: int):
        import pyarrow.parquet as pq

        wanted = [self.columns["caption"]] + ([self.columns["label_0"]] if self.preferred is None else [])
        offset = 0
        for path in self.files:
            with pq.ParquetFile(path) as handle:
                for batch in handle.iter_batches(batch_size=batch_rows, columns=list(dict.fromkeys(wanted))):
                    yield offset, batch.column(self.columns["caption"]).to_pylist(), self._labels(batch)
                    offset += batch.num_rows

    def _file(self, index: int):
        import pyarrow.parquet as pq

        if self._pid != os.getpid():  # a forked worker: its own handles and cache
            self._handles, self._groups, self._pid = OrderedDict(), OrderedDict(), os.getpid()
        if index in self._handles:
            self._handles.move_to_end(index)
        else:
            self._handles[index] = pq.ParquetFile(self.files[index])
            while len(self._handles) > OPEN_FILES:
                self._handles.popitem(last=False)[1].close()
        return self._handles[index]

    def _row_group(self, group: int):
        handle = self._file(self._file_of_group[group])
        if group in self._groups:
            self._groups.move_to_end(group)
            return self._groups[group]
        names = list(dict.fromkeys(self.columns[k] for k in ("caption", "image_0", "image_1")))
        table = handle.read_row_group(self._group_in_file[group], columns=names)
        self._groups[group] = table
        while len(self._groups) > CACHED_ROW_GROUPS:
            self._groups.popitem(last=False)
        return table

    def read_row(self, row: int, columns: tuple[str, ...]) -> dict:
        group = int(np.searchsorted(self._group_starts, row, side="right") - 1)
        table = self._row_group(group)
        position = row - int(self._group_starts[group])
        out = {}
        for name in columns:
            key = {"jpg_0": "image_0", "jpg_1": "image_1"}.get(name, name)
            value = table.column(self.columns[key])[position].as_py()
            out[name] = image_bytes(value, self.root) if key != "caption" else value
        return out

    def held_bytes(self) -> int:
        return sum(table.nbytes for table in self._groups.values()) if self._pid == os.getpid() else 0

    def __getstate__(self):  # DataLoader workers (spawn) get paths, not open handles
        state = dict(self.__dict__)
        state.update(_handles=OrderedDict(), _groups=OrderedDict(), _pid=None)
        return state


def check_columns(columns: dict, where: str = "data.columns") -> None:
    """One line for a mapping that cannot work: unknown keys, missing images or caption, neither
    or both of a label column and a ``preferred`` rule."""
    unknown = [k for k in columns if k not in COLUMN_KEYS]
    if unknown:
        raise DataError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(COLUMN_KEYS)}")
    missing = [k for k in ("caption", "image_0", "image_1") if not isinstance(columns.get(k), str)]
    if missing:
        raise DataError(f'{where}: must name the column(s) {", ".join(missing)} (e.g. {missing[0]} = "prompt")')
    if ("label_0" in columns) == ("preferred" in columns):
        raise DataError(
            f'{where}: give a label column (label_0 = "COLUMN", 1/0/0.5 as Pick-a-Pic) or a rule '
            f'(preferred = "image_0" or "image_1"), one of the two'
        )
    if "preferred" in columns and columns["preferred"] not in ("image_0", "image_1"):
        raise DataError(f"{where}.preferred: must be image_0 or image_1; got {columns['preferred']!r}")
