"""``hpdv3``: Human Preference Dataset v3 (MizzenAI/HPDv3) in the HPSv3 pairwise JSON form:
``[{"prompt", "path1", "path2", "confidence"}, ...]`` where ``path1``'s image is always the
preferred one (HPSv3's README, "Pairwise Training Data Format"). Paths are relative to the JSON
file's folder. ``confidence`` is kept out of the pairs (HPSv3 trains above a threshold of 0.95;
filter the JSON beforehand to do the same).
"""

from __future__ import annotations

from pathlib import Path

from ..sources import DataError
from .columns import ColumnSource
from .index import build_index, iter_json_records
from .registry import DataSource, register

COLUMNS = {"caption": "caption", "image_0": "image_0", "image_1": "image_1", "label_0": "label_0"}


def records_to_rows(records):
    for record in records:
        yield record.get("prompt"), record.get("path1"), record.get("path2"), 1.0


def open_hpdv3(location: str, split: str, columns: dict):
    path = Path(location).expanduser()
    annotation = path if path.is_file() else path / f"{split}.json"
    if not annotation.is_file():
        raise DataError(f"hpdv3: no {annotation} (a JSON list of prompt, path1 (preferred), path2)")
    index = build_index("hpdv3", [annotation], split, records_to_rows(iter_json_records(annotation)))
    return ColumnSource([index], COLUMNS, root=annotation.parent, name=f"hpdv3:{annotation}")


SOURCE = register(
    DataSource(
        name="hpdv3",
        summary="HPDv3 pairwise JSON (prompt, path1 preferred, path2, confidence) and its images",
        layout="https://huggingface.co/datasets/MizzenAI/HPDv3; github.com/MizzenAI/HPSv3 README "
        "(Pairwise Training Data Format)",
        example="hpdv3:/data/HPDv3/train.json",
        open=open_hpdv3,
    )
)
