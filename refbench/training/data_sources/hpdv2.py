"""``hpdv2``: Human Preference Dataset v2 (ymhao/HPDv2), images on disk and JSON annotations.

Layout (the dataset card and HPSv2's ``HPDDataset``/``RankingDataset``): a folder with
``train.json`` / ``test.json`` and the images extracted from ``train.tar.gz`` / ``test.tar.gz``
into ``train/`` / ``test/``. A ``train.json`` record is ``{"prompt", "file_path": [a, b],
"human_preference": [1, 0]}`` (1 marks the preferred image); a ``test.json`` record is
``{"prompt", "image_path": [...], "rank": [...], "raw_annotations": [...]}`` (a lower rank is
better), made into every pair of its images (equal ranks: a tie). Paths are relative to the
split's image folder.
"""

from __future__ import annotations

from pathlib import Path

from ..sources import DataError
from .columns import ColumnSource
from .index import build_index, iter_json_records, pairs_from_ranks
from .registry import DataSource, register

COLUMNS = {"caption": "caption", "image_0": "image_0", "image_1": "image_1", "label_0": "label_0"}


def records_to_rows(records):
    """(caption, image_0, image_1, label_0) rows of HPDv2 records (train or test form)."""
    for record in records:
        prompt = record.get("prompt")
        images = record.get("file_path") or record.get("image_path") or []
        if "rank" in record:
            for i, j, label in pairs_from_ranks(record["rank"]):
                yield prompt, images[i], images[j], label
        elif "human_preference" in record and len(images) >= 2:
            preference = record["human_preference"]
            best = max(range(len(preference)), key=lambda k: preference[k])
            if len(images) == 2:
                a, b = preference[0], preference[1]
                yield prompt, images[0], images[1], 1.0 if a > b else 0.0 if b > a else 0.5
            else:  # the preferred image against each other one
                for k in range(len(images)):
                    if k != best:
                        yield prompt, images[best], images[k], 1.0 if preference[best] > preference[k] else 0.5


def open_hpdv2(location: str, split: str, columns: dict):
    path = Path(location).expanduser()
    annotation = path if path.is_file() else path / f"{split}.json"
    if not annotation.is_file():
        raise DataError(f"hpdv2: no {annotation} (the HPDv2 folder holds train.json, test.json, train/, test/)")
    folder = annotation.parent
    root = folder / split if (folder / split).is_dir() else folder
    index = build_index("hpdv2", [annotation], split, records_to_rows(iter_json_records(annotation)))
    return ColumnSource([index], COLUMNS, root=root, name=f"hpdv2:{annotation}")


SOURCE = register(
    DataSource(
        name="hpdv2",
        summary="HPDv2: train.json/test.json (prompt, image paths, human_preference or rank) and image folders",
        layout="https://huggingface.co/datasets/ymhao/HPDv2 (card); "
        "github.com/tgxs002/HPSv2 hpsv2/src/training/data.py (HPDDataset, RankingDataset)",
        example="hpdv2:/data/HPDv2",
        open=open_hpdv2,
    )
)
