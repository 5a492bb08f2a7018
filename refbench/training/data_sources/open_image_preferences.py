"""``open-image-preferences``: data-is-better-together/open-image-preferences-v1-binarized,
parquet files (``data/train-0000N-of-0000M.parquet``) with ``prompt`` and the ``chosen`` and
``rejected`` images (``datasets`` Image structs of encoded bytes); the chosen image is image 0.
"""

from __future__ import annotations

from pathlib import Path

from .columns import ColumnSource, parquet_files
from .registry import DataSource, register

COLUMNS = {"caption": "prompt", "image_0": "chosen", "image_1": "rejected", "preferred": "image_0"}


def open_oip(location: str, split: str, columns: dict):
    path = Path(location).expanduser()
    files = parquet_files(path, split)
    return ColumnSource(files, COLUMNS, root=path if path.is_dir() else path.parent, name="open-image-preferences")


SOURCE = register(
    DataSource(
        name="open-image-preferences",
        summary="open-image-preferences-v1-binarized: parquet with prompt, chosen, rejected images",
        layout="https://huggingface.co/datasets/data-is-better-together/open-image-preferences-v1-binarized (card)",
        example="open-image-preferences:/data/open-image-preferences-v1-binarized",
        open=open_oip,
    )
)
