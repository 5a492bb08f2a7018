"""``parquet``: any parquet file or folder read through ``data.columns`` (which column is the
caption, which the two images, and a label column or a rule for the preferred image)."""

from __future__ import annotations

from pathlib import Path

from .columns import ColumnSource, check_columns, parquet_files
from .registry import DataSource, register


def open_mapped(location: str, split: str, columns: dict):
    check_columns(columns)
    path = Path(location).expanduser()
    return ColumnSource(parquet_files(path, split), columns, root=path if path.is_dir() else path.parent)


SOURCE = register(
    DataSource(
        name="parquet",
        summary="any parquet through [data.columns] (caption, image_0, image_1, label_0 or preferred)",
        layout="refbench's own: docs/data.md, 'Any parquet through a column mapping'",
        example='parquet:/data/prefs.parquet with [data.columns] caption = "prompt", ...',
        open=open_mapped,
    )
)
