"""Names that are a local path or a hub id: one rule for telling them apart, one message when neither exists.

A name is local when it exists on disk, or when it starts like a path (``/``, ``.``, ``~``),
which no hub id does. Any other name that is not on disk is tried as a hub id; when that
fails too, the one-line message says both: no such file or folder here, and why the hub
did not have it (offline and not cached, no such repository, no such file in it, ...).
Nothing here imports huggingface_hub until a hub id is actually tried.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SourceNotFound", "looks_local", "local_path", "hub_file", "hub_reason"]


class SourceNotFound(FileNotFoundError):
    """Neither a local file or folder nor a hub id that can be had; ``str()`` is one line."""


def looks_local(source: str) -> bool:
    """A path rather than a hub id: it exists, or starts like a path (``/``, ``.``, ``~``)."""
    return os.path.exists(os.path.expanduser(source)) or source.startswith(("/", ".", "~"))


def local_path(source: str) -> Path:
    """The local file or folder ``source``; SourceNotFound (one line) if it is not there."""
    path = Path(os.path.expanduser(source))
    if not path.exists():
        raise SourceNotFound(
            f"no such file or folder {source!r} (and as a hub id: none starts with "
            f"'/', '.' or '~'; hub ids look like owner/name)"
        )
    return path


def hub_reason(exc: BaseException, filename: str | None = None) -> str:
    """Why the hub could not give a file, in a few words, from huggingface_hub's exception."""
    from huggingface_hub import constants, errors

    if isinstance(exc, errors.HFValidationError):
        return "it is not a valid hub id (owner/name)"
    if isinstance(exc, errors.GatedRepoError):
        return "the repository is gated: log in with a token that has access"
    if isinstance(exc, errors.RepositoryNotFoundError):
        return "no such repository on the hub (or it is private)"
    if isinstance(exc, errors.EntryNotFoundError) and not isinstance(exc, errors.LocalEntryNotFoundError):
        return f"the repository has no file {filename}" if filename else "the repository has no such file"
    if constants.HF_HUB_OFFLINE:
        return "it is not in the local hub cache and HF_HUB_OFFLINE is set"
    return "the hub cannot be reached and it is not in the local hub cache"


def hub_file(repo_id: str, filename: str, *, source: str | None = None, repo_type: str | None = None) -> str:
    """Path of ``filename`` of hub repo ``repo_id`` (cache first; offline mode never downloads).

    Every failure becomes a SourceNotFound whose message names ``source`` (the name the user
    gave; default ``repo_id/filename``) and says that it was tried as a local path and as a hub id."""
    import huggingface_hub
    from huggingface_hub import errors

    try:
        return huggingface_hub.hf_hub_download(repo_id, filename, repo_type=repo_type)
    except (OSError, errors.EntryNotFoundError, errors.HFValidationError) as exc:
        shown = source or f"{repo_id}/{filename}"
        raise SourceNotFound(
            f"no such file or folder {shown!r}, and as a hub id ({repo_id}, file {filename}) "
            f"{hub_reason(exc, filename)}"
        ) from exc
