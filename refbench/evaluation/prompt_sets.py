"""Named prompt sets for generation and evaluation.

| name            | prompts | where from (default)                                             |
|-----------------|---------|------------------------------------------------------------------|
| ``toy-train``   | built in | ``refbench.toy.prompts.prompt_set("toy-train")``                |
| ``toy-test``    | built in | ``refbench.toy.prompts.prompt_set("toy-test")`` (held-out pairs) |
| ``toy-val``     | built in | 42 toy-train prompts, for tuning (``prompt_set("toy-val")``)    |
| ``pickapic-test`` | 500   | a local copy only: ``yuvalkirstain/pickapic_v2`` (split ``test_unique``, column ``caption``) is off the hub since 2025-04-30 |
| ``hpdv2``       | 3,200   | hub dataset ``zhwang/HPDv2``, ``benchmark/{anime,concept-art,paintings,photo}.json`` (800 each; as HPSv2's ``download_benchmark_prompts`` gets them) |
| ``partiprompts`` | 1,632  | hub dataset ``nateraw/parti-prompts``, ``PartiPrompts.tsv``, column ``Prompt`` (also google-research/parti's ``PartiPrompts.tsv``) |

The counts are those of the paper (Sec. 4). ``pickapic-test`` keeps the first occurrence
of each caption (``test_unique`` already has 500 distinct ones; a local copy of the full
``test`` split is deduplicated to its distinct captions); HPDv2 and PartiPrompts are
returned as published, in file order (the HPSv2 benchmark indexes images by that order).
``pickapic_v2``'s parquet files hold the images too (the ``test_unique`` split is ~175 MB);
``source="yuvalkirstain/pickapic_v2_no_images"`` has the same splits without them.

``source`` (or the ``name=source`` form) is a hub dataset id or a local file or folder:
``.txt`` (one prompt per line), ``.csv``/``.tsv``/``.parquet`` (the set's column, else a
``caption``/``prompt``/``text`` column, else the only column), ``.json`` (a list of strings,
a list of objects, or an object holding a list under the column) or ``.jsonl``. A folder
is searched for the set's hub file names (e.g. the four HPDv2 style files, or
``test_unique-*.parquet``), else every supported file in it is read, sorted by name.
Hub downloads are cached by huggingface_hub; with ``HF_HUB_OFFLINE=1`` only the cache is used.

With no source named, a set is first looked for in the local prompts folder (``$REFBENCH_PROMPTS``,
default ``~/.cache/refbench/prompts``): ``FOLDER/NAME/`` holding the set's files in their own
layout (e.g. ``PartiPrompts.tsv``; ``benchmark/anime.json`` ... or the four files flat; Pick-a-Pic's
``data/test_unique-*.parquet`` or the parquet files flat), or one file ``FOLDER/NAME.EXT``. Then
the hub (PartiPrompts, HPDv2). ``pickapic-test`` is never fetched: the hub set is gone. When
nothing is found, one line says where to put the file.

Tested offline: local files in every accepted format, laid out like the hub files. Not tested:
the hub loaders themselves (no dataset hub in development).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import RefbenchError

FORMATS = ".txt, .csv, .tsv, .parquet, .json, .jsonl"
_SUFFIXES = tuple(FORMATS.split(", "))
_FALLBACK_COLUMNS = ("caption", "prompt", "text")
HPD_STYLES: tuple[str, ...] = ("anime", "concept-art", "paintings", "photo")


class PromptSetError(RefbenchError, ValueError):
    """Unknown prompt set, unreadable file or unreachable hub; one-line message."""


@dataclass(frozen=True)
class PromptSetSpec:
    name: str
    description: str
    count: int | None = None  # size in the paper; None for the built-in toy sets
    repo: str | None = None  # hub dataset id of the default source
    files: tuple[str, ...] = ()  # file patterns inside the hub repo (or a local folder), in order
    column: str = "prompt"
    unique: bool = False  # keep only the first occurrence of each prompt
    off_hub: str | None = None  # when the hub set went away: read from a local copy only


PROMPT_SET_SPECS: dict[str, PromptSetSpec] = {
    s.name: s
    for s in (
        PromptSetSpec("toy-train", "toy world: prompts of the training split"),
        PromptSetSpec("toy-test", "toy world: held-out (colour, shape) combinations"),
        PromptSetSpec("toy-val", "toy world: 42 toy-train prompts for tuning, left out of the regime's pairs"),
        PromptSetSpec(
            "pickapic-test",
            "Pick-a-Pic v2 test split, unique captions",
            500,
            "yuvalkirstain/pickapic_v2",
            ("data/test_unique-*.parquet",),
            "caption",
            unique=True,
            off_hub="2025-04-30",
        ),
        PromptSetSpec(
            "hpdv2",
            "HPDv2 benchmark prompts (4 styles x 800)",
            3200,
            "zhwang/HPDv2",
            tuple(f"benchmark/{s}.json" for s in HPD_STYLES),
            "prompt",
        ),
        PromptSetSpec(
            "partiprompts", "PartiPrompts (P2)", 1632, "nateraw/parti-prompts", ("PartiPrompts.tsv",), "Prompt"
        ),
    )
}


def prompt_set_names() -> list[str]:
    return list(PROMPT_SET_SPECS)


def load_prompt_set(name: str, source: str | os.PathLike | None = None) -> list[str]:
    """Prompts of set ``name`` (``name=source`` also accepted), from ``source`` or the default."""
    if source is None and "=" in name:
        name, source = (part.strip() for part in name.split("=", 1))
    spec = PROMPT_SET_SPECS.get(name)
    if spec is None:
        raise PromptSetError(f"unknown prompt set {name!r}; valid: {', '.join(PROMPT_SET_SPECS)}")
    if spec.repo is None:  # toy sets are generated, never read
        if source is not None:
            raise PromptSetError(f"{name}: a built-in toy prompt set takes no source (got {str(source)!r})")
        from ..toy.prompts import prompt_set

        return [p.text for p in prompt_set(name)]
    source = str(source) if source is not None else None
    if source is None:
        source = _local_copy(spec)
    if source is None and spec.off_hub:
        raise PromptSetError(
            f"{name}: the hub set {spec.repo} is gone (since {spec.off_hub}); put a local copy "
            f"({', '.join(spec.files)}, or any {FORMATS} file of its {spec.column!r} column) in "
            f"{prompts_home() / name}/ (or pass {name}=PATH)"
        )
    if source is None or _looks_like_hub_id(source):
        prompts = _from_hub(spec, source or spec.repo)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise PromptSetError(
                f"{name}: no such file or folder {source!r}; pass a local file ({FORMATS}) "
                f"or folder, or a hub dataset id"
            )
        prompts = _read_path(spec, path)
    prompts = [p.strip() for p in prompts if isinstance(p, str) and p.strip()]
    if spec.unique:
        prompts = list(dict.fromkeys(prompts))
    if not prompts:
        raise PromptSetError(f"{name}: no prompts found in {source or spec.repo!r}")
    return prompts


def prompts_home() -> Path:
    """The local prompts folder: ``$REFBENCH_PROMPTS``, else ``~/.cache/refbench/prompts``."""
    return Path(os.environ.get("REFBENCH_PROMPTS") or "~/.cache/refbench/prompts").expanduser()


def _local_copy(spec: PromptSetSpec) -> str | None:
    """``HOME/NAME/`` (the set's files) or ``HOME/NAME.EXT`` in the local prompts folder, if there."""
    home = prompts_home()
    if (home / spec.name).is_dir():
        return str(home / spec.name)
    files = sorted(home.glob(f"{spec.name}.*")) if home.is_dir() else []
    found = [f for f in files if f.suffix.lower() in _SUFFIXES]
    return str(found[0]) if found else None


def _looks_like_hub_id(source: str) -> bool:
    """``owner/name`` that is not an existing path and is not written like one."""
    parts = source.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not os.path.exists(os.path.expanduser(source))
        and not source.startswith((".", "~"))
        and not source.lower().endswith(_SUFFIXES)
    )


def _from_hub(spec: PromptSetSpec, repo: str) -> list[str]:
    import huggingface_hub
    from huggingface_hub import errors

    try:
        folder = huggingface_hub.snapshot_download(repo, repo_type="dataset", allow_patterns=list(spec.files))
    except (OSError, errors.EntryNotFoundError, errors.HFValidationError) as exc:
        raise PromptSetError(
            f"{spec.name}: cannot load {repo!r} ({', '.join(spec.files)}) from the hub (offline, or not found); "
            f"put {' and '.join(spec.files)} in {prompts_home() / spec.name}/, or pass a local file or folder "
            f"({spec.name}=PATH; load_prompt_set({spec.name!r}, source=PATH)) with {FORMATS}"
        ) from exc
    return _read_path(spec, Path(folder))


def _files_in(spec: PromptSetSpec, folder: Path) -> list[Path]:
    """The set's files in ``folder`` (hub layout, or flat), else every supported file."""
    found: list[Path] = []
    for pattern in spec.files:
        found += sorted(folder.glob(pattern)) or sorted(folder.glob(Path(pattern).name))
    if not found:
        found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES)
    if not found:
        raise PromptSetError(f"{spec.name}: no prompt files ({', '.join(spec.files)}, or any {FORMATS}) in {folder}")
    return found


def _read_path(spec: PromptSetSpec, path: Path) -> list[str]:
    files = _files_in(spec, path) if path.is_dir() else [path]
    return [p for f in files for p in _read_file(spec, f)]


def _pick_column(spec: PromptSetSpec, columns: list[str], path: Path) -> str:
    lower = {c.lower(): c for c in columns}
    for want in (spec.column, *_FALLBACK_COLUMNS):
        if want.lower() in lower:
            return lower[want.lower()]
    if len(columns) == 1:
        return columns[0]
    raise PromptSetError(f"{spec.name}: {path} has no {spec.column!r} column (columns: {', '.join(columns)})")


def _read_file(spec: PromptSetSpec, path: Path) -> list[str]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".txt":
            return path.read_text(encoding="utf-8").splitlines()
        if suffix in (".csv", ".tsv"):
            import pandas as pd

            # dtype=str, no NA parsing: a prompt such as "None" must stay a prompt
            df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
            return df[_pick_column(spec, list(df.columns), path)].tolist()
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            column = _pick_column(spec, pq.read_schema(path).names, path)
            return pq.read_table(path, columns=[column]).column(column).to_pylist()  # never reads images
        if suffix in (".json", ".jsonl"):
            text = path.read_text(encoding="utf-8")
            rows = (
                [json.loads(line) for line in text.splitlines() if line.strip()]
                if suffix == ".jsonl"
                else json.loads(text)
            )
            return _from_json(spec, rows, path)
    except (OSError, ValueError, KeyError) as exc:
        if isinstance(exc, PromptSetError):
            raise
        raise PromptSetError(
            f"{spec.name}: cannot read {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    raise PromptSetError(f"{spec.name}: unsupported file {path.name}; use {FORMATS}")


def _from_json(spec: PromptSetSpec, data: object, path: Path) -> list[str]:
    if isinstance(data, dict):  # {"prompt": [...]} (or {"caption": [...]} ...)
        data = data[_pick_column(spec, list(data), path)]
    if not isinstance(data, list):
        raise PromptSetError(f"{spec.name}: {path} holds no list of prompts")
    if data and isinstance(data[0], dict):
        column = _pick_column(spec, list(data[0]), path)
        return [row.get(column) for row in data]
    return data
