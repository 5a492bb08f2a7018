"""``pickapic-v2``: Pick-a-Pic v2 in its own parquet schema (caption, jpg_0, jpg_1, label_0),
from a local copy (a parquet file or a folder of them) or a hub id, as refbench always read it."""

from __future__ import annotations

from ..sources import open_pair_source
from .registry import DataSource, register

SOURCE = register(
    DataSource(
        name="pickapic-v2",
        summary="Pick-a-Pic v2 (caption, jpg_0, jpg_1, label_0): a local copy, or a hub id of a mirror or cache",
        layout="https://huggingface.co/datasets/yuvalkirstain/pickapic_v2 (card, withdrawn 2025-04-30); "
        "github.com/SalesforceAIResearch/DiffusionDPO train.py",
        example="pickapic-v2:/data/pickapic_v2",
        open=lambda location, split, columns: open_pair_source(location, split),
    )
)
