"""Named sources of preference pairs (issue 27): one module per source, each registered with its
name, a one-line summary, where its layout was read and how a location opens as a lazily read
``PairSource`` yielding refbench's rows (``caption``, ``jpg_0``, ``jpg_1``, ``label_0``).

A source is named in ``data.source`` as ``NAME:LOCATION`` (``hpdv2:/data/HPDv2``); a plain
location (a parquet file or folder, or a hub id) is Pick-a-Pic v2's schema as before, or, when
``data.columns`` is set, any parquet read through that column mapping (``parquet``).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..sources import WITHDRAWN, DataError, PairSource, withdrawn_message
from . import hpdv2, hpdv3, imagerewarddb, mapped, open_image_preferences, pickapic  # noqa: F401 (registers)
from .registry import REGISTRY, DataSource, source_names, split_source

# `refbench data list` order: the paper's data first, the column mapping last.
_ORDER = ["pickapic-v2", "hpdv2", "hpdv3", "imagerewarddb", "open-image-preferences", "parquet"]
for _name in sorted(REGISTRY, key=lambda n: _ORDER.index(n) if n in _ORDER else len(_ORDER)):
    REGISTRY[_name] = REGISTRY.pop(_name)

__all__ = ["REGISTRY", "DataSource", "open_source", "resolve", "check_data_source", "check_gone", "source_names"]


def resolve(text: str, columns: dict | None = None) -> tuple[str, str]:
    """(registered name, location) of a ``data.source`` value (see the module's docstring)."""
    name, location = split_source(text)
    if name is None:
        name = "parquet" if columns else "pickapic-v2"
    return name, location


def open_source(text: str, split: str = "train", columns: dict | None = None) -> PairSource:
    name, location = _resolved(text, columns)
    return REGISTRY[name].open(location, split, dict(columns or {}))


def _resolved(text: str, columns: dict | None) -> tuple[str, str]:
    name, location = resolve(text, columns)
    if columns and name != "parquet":
        raise DataError(f"data.columns: only for the parquet source (a plain path or parquet:PATH); {name} has its own")
    return name, location


def check_gone(data) -> None:
    """A withdrawn hub data set that is not in the local cache, in one line, before anything else
    is checked or loaded (the SD presets' default data is one)."""
    if data.source in WITHDRAWN and not _cached_locally(data.source) and _gone_from_hub(data.source):
        raise DataError(withdrawn_message(data.source))


def check_data_source(data) -> None:
    """What can be said of ``data`` (a DataConfig) before it is read, in one line: an unknown
    source name, a column mapping that cannot work, a local location that is missing, a
    withdrawn hub data set that is not in the local cache."""
    if data.source == "toy":
        return
    check_gone(data)
    name, location = _resolved(data.source, data.columns)
    if data.columns:
        from .columns import check_columns

        check_columns(data.columns)
    looks_local = location.startswith((".", "/", "~")) or location.count("/") != 1 or name != "pickapic-v2"
    if looks_local and not Path(location).expanduser().exists():
        raise DataError(f"preference data not found: no file or folder {location} exists ({name} source)")


def _cached_locally(repo: str) -> bool:
    """A copy of the hub data set in the Hub's or ``datasets``' cache."""
    from huggingface_hub import constants

    owner, name = repo.split("/")
    hub = Path(constants.HF_HUB_CACHE) / f"datasets--{owner}--{name}"
    datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE", Path(constants.HF_HOME) / "datasets"))
    return hub.is_dir() or (datasets_cache / f"{owner}___{name}").is_dir()


def _gone_from_hub(repo: str) -> bool:
    """Offline: gone for us. Online: the Hub answers that the repository does not exist (a network
    failure is left to the loader, which says what it is)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return True
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import RepositoryNotFoundError

        HfApi().dataset_info(repo, timeout=10)
    except RepositoryNotFoundError:
        return True
    except Exception:  # no network, a proxy: not known to be gone
        return False
    return False
