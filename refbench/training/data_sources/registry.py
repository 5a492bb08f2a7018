"""The registry of named data sources: each declares its name, a one-line summary, where its
layout was read, and how a location (a folder or file) opens as a lazily read ``PairSource``."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ..sources import DataError, PairSource

__all__ = ["DataSource", "REGISTRY", "register", "split_source", "source_names"]


@dataclass(frozen=True)
class DataSource:
    name: str
    summary: str
    layout: str  # where the layout was read (the dataset card, the authors' loader)
    example: str  # how a user names it
    open: Callable[[str, str, dict], PairSource]  # (location, split, data.columns) -> rows


REGISTRY: dict[str, DataSource] = {}
_NAMED = re.compile(r"^([a-z][a-z0-9-]+):(?!//)(.*)$")  # "hpdv2:/data/HPDv2"; not "s3://", not "C:\"


def register(source: DataSource) -> DataSource:
    REGISTRY[source.name] = source
    return source


def source_names() -> list[str]:
    return list(REGISTRY)


def split_source(text: str) -> tuple[str | None, str]:
    """``"NAME:LOCATION"`` -> (NAME, LOCATION) for a registered name (an unknown NAME is one line
    listing the registry); anything else -> (None, text)."""
    match = _NAMED.match(text)
    if not match:
        return None, text
    name, location = match.groups()
    if name not in REGISTRY:
        raise DataError(f"data.source: unknown data source {name!r}; known: {', '.join(REGISTRY)} (refbench data list)")
    if not location.strip():
        raise DataError(f"data.source: {name}: needs a location after the colon, e.g. {REGISTRY[name].example}")
    return name, location
