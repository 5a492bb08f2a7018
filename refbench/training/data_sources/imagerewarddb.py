"""``imagerewarddb``: ImageRewardDB (THUDM/ImageRewardDB), ranked groups of images per prompt.

Layout (the dataset card and its loading script ``ImageRewardDB.py``): a folder with
``metadata-{train,validation,test}.parquet`` (one row per image: ``image_path``, ``prompt_id``,
``prompt``, ``classification``, ``image_amount_in_total``, ``rank``, ratings) and the images
under ``images/<split>/<split>_N/`` once the ``images/<split>/<split>_N.zip`` archives are
extracted where they lie. ``rank`` orders the images of one prompt (1 is best); every pair of a
prompt's images becomes a row, the better-ranked first, equal ranks a tie. The metadata is read
in batches; a prompt's rows must be contiguous, as the published files are.
"""

from __future__ import annotations

from pathlib import Path

from ..sources import DataError
from .columns import ColumnSource
from .index import build_index, pairs_from_ranks
from .registry import DataSource, register

COLUMNS = {"caption": "caption", "image_0": "image_0", "image_1": "image_1", "label_0": "label_0"}
NEEDED = ("image_path", "prompt_id", "prompt", "rank")


def metadata_rows(path: Path, batch_rows: int = 8_192):
    """Rows of pairs from a metadata parquet, one prompt group at a time."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as handle:
        missing = [c for c in NEEDED if c not in handle.schema_arrow.names]
        if missing:
            raise DataError(f"{path} lacks the column(s) {', '.join(missing)} of ImageRewardDB's metadata")
        seen: set = set()
        group_id, group = None, []
        for batch in handle.iter_batches(batch_size=batch_rows, columns=list(NEEDED)):
            for record in batch.to_pylist():
                if record["prompt_id"] != group_id:
                    yield from _group_pairs(group)
                    if record["prompt_id"] in seen:
                        raise DataError(f"{path}: the rows of prompt {record['prompt_id']} are not contiguous")
                    seen.add(record["prompt_id"])
                    group_id, group = record["prompt_id"], []
                group.append(record)
        yield from _group_pairs(group)


def _group_pairs(group: list[dict]):
    ranks = [r["rank"] for r in group]
    for i, j, label in pairs_from_ranks(ranks):
        yield group[i]["prompt"], group[i]["image_path"], group[j]["image_path"], label


def open_imagerewarddb(location: str, split: str, columns: dict):
    path = Path(location).expanduser()
    metadata = path if path.is_file() else path / f"metadata-{split}.parquet"
    if not metadata.is_file():
        raise DataError(f"imagerewarddb: no {metadata} (the ImageRewardDB folder holds metadata-{split}.parquet)")
    index = build_index("imagerewarddb", [metadata], split, metadata_rows(metadata))
    return ColumnSource([index], COLUMNS, root=metadata.parent, name=f"imagerewarddb:{metadata}")


SOURCE = register(
    DataSource(
        name="imagerewarddb",
        summary="ImageRewardDB: metadata-SPLIT.parquet (prompt_id, rank, image_path), pairs from ranks per prompt",
        layout="https://huggingface.co/datasets/THUDM/ImageRewardDB (card, ImageRewardDB.py)",
        example="imagerewarddb:/data/ImageRewardDB",
        open=open_imagerewarddb,
    )
)
