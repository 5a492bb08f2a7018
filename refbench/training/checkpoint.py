"""Training checkpoints: everything ``--resume`` needs to continue bit for bit.

A checkpoint is a folder ``RUN/checkpoint`` holding the policy's weights, the reference's
weights (when it can differ from the initial model), the optimizer and lr-schedule
states, and ``state.json`` (step, reference-update state, counters). The initial model
is not saved: it is reloaded from its source. Randomness needs no saved state: noise,
timesteps and data order are functions of (seed, step). A checkpoint is written to a
temporary folder and renamed into place, so a kill during the write leaves the previous
one intact.

Nothing in a checkpoint is unpickled: weights are safetensors, the optimizer and lr-schedule
states are read with ``torch.load(weights_only=True)`` (tensors, numbers, strings and
containers only; a planted pickle payload is refused, not run), and ``state.json`` is JSON.
Every file is checked as it is read, and a missing, truncated or foreign one is a one-line
``CheckpointError`` naming the file and what to do.

Under FSDP (``sharding.py``) the weights and the optimizer state are accelerate's sharded state
instead: ``pytorch_model_fsdp_0/`` (the policy; for LoRA the whole denoiser with both adapters),
``pytorch_model_fsdp_1/`` (a syncing full reference) and ``optimizer_0/``, each a
``torch.distributed.checkpoint`` folder to which every rank writes its own shards, beside
``lr_scheduler.pt`` and ``state.json`` (which records the number of ranks). The same rename makes
the sharded checkpoint appear whole or not at all.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError

STATE_FILE = "state.json"
# What state.json must hold for a resume to continue where the run stopped.
STATE_KEYS = ("step", "elapsed", "skipped_steps", "updater")


def save_checkpoint(
    folder: Path,
    *,
    policy: dict[str, torch.Tensor],
    reference: dict[str, torch.Tensor] | None,
    optimizer: dict,
    lr_scheduler: dict,
    state: dict[str, Any],
) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in policy.items()}, str(partial / "policy.safetensors"))
    if reference is not None:
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in reference.items()}, str(partial / "reference.safetensors")
        )
    torch.save({"optimizer": optimizer, "lr_scheduler": lr_scheduler}, partial / "optimizer.pt")
    (partial / STATE_FILE).write_text(json.dumps(state, indent=1))
    _into_place(partial, folder)


def _into_place(partial: Path, folder: Path) -> None:
    """``partial`` becomes ``folder``; the old one is kept aside until then (``has_checkpoint`` puts
    it back after a kill between the two renames)."""
    previous = folder.with_name(folder.name + ".previous")
    shutil.rmtree(previous, ignore_errors=True)
    if folder.exists():
        folder.rename(previous)
    partial.rename(folder)
    shutil.rmtree(previous, ignore_errors=True)


SHARDED_FOLDERS = {"policy": "pytorch_model_fsdp_0", "reference": "pytorch_model_fsdp_1", "optimizer": "optimizer_0"}


def save_sharded_checkpoint(
    folder: Path,
    accelerator,
    *,
    policy: torch.nn.Module,
    reference: torch.nn.Module | None,
    optimizer,
    lr_scheduler: dict,
    state: dict[str, Any],
) -> None:
    """Every rank writes its shards (accelerate's FSDP save functions); the main process writes
    the rest and renames the folder into place once all ranks are done."""
    from accelerate.utils import save_fsdp_model, save_fsdp_optimizer

    folder, plugin, main = Path(folder), accelerator.state.fsdp_plugin, accelerator.is_main_process
    partial = folder.with_name(folder.name + ".partial")
    if main:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    save_fsdp_model(plugin, accelerator, policy, partial, 0)
    if reference is not None:
        save_fsdp_model(plugin, accelerator, reference, partial, 1)
    save_fsdp_optimizer(plugin, accelerator, optimizer, policy, partial, 0)
    accelerator.wait_for_everyone()
    if main:
        torch.save({"lr_scheduler": lr_scheduler}, partial / "lr_scheduler.pt")
        (partial / STATE_FILE).write_text(json.dumps(state, indent=1))
        _into_place(partial, folder)
    accelerator.wait_for_everyone()


def load_sharded_into(folder: Path, accelerator, *, policy, reference, optimizer) -> None:
    """Every rank reads its shards into the sharded models and optimizer (collective)."""
    from accelerate.utils import load_fsdp_model, load_fsdp_optimizer

    plugin = accelerator.state.fsdp_plugin
    load_fsdp_model(plugin, accelerator, policy, folder, 0)
    if reference is not None:
        load_fsdp_model(plugin, accelerator, reference, folder, 1)
    load_fsdp_optimizer(plugin, accelerator, optimizer, policy, folder, 0)


def has_checkpoint(folder: Path) -> bool:
    folder = Path(folder)
    if (folder / STATE_FILE).is_file():
        return True
    # A kill between the two renames leaves only the previous checkpoint: put it back.
    previous = folder.with_name(folder.name + ".previous")
    if (previous / STATE_FILE).is_file():
        previous.rename(folder)
        return True
    return False


def _unusable(path: Path, folder: Path, what: str) -> CheckpointError:
    """The one-line error for a checkpoint file: which file, what is wrong, what to do."""
    return CheckpointError(
        f"the checkpoint file {path} {what}; restore it from a copy, or delete {folder} and resume "
        f"again to restart the run from step 0 (its logged metrics stay in the store)"
    )


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]


def _read_safetensors(path: Path, folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise _unusable(path, folder, "is missing") from None
    except Exception as exc:  # safetensors raises its own error types for a truncated or foreign file
        raise _unusable(path, folder, f"is corrupt or truncated ({_first_line(exc)})") from None


def _read_optimizer(path: Path, folder: Path) -> dict:
    import pickle

    try:
        # weights_only: only tensors, numbers, strings and containers; anything else is refused unrun.
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise _unusable(path, folder, "is missing") from None
    except pickle.UnpicklingError as exc:
        # torch's message goes on to explain how to load the file unsafely: quote only what was refused.
        found = re.search(r"GLOBAL (\S+)", str(exc))
        refused = f"it names {found.group(1)[:120]}" if found else "not plain data"
        raise _unusable(
            path, folder, f"holds objects or code that a weights-only load refuses, so it was not loaded ({refused})"
        ) from None
    except Exception as exc:  # a truncated zip archive, an empty file
        raise _unusable(path, folder, f"is corrupt or truncated ({_first_line(exc)})") from None
    if not isinstance(saved, dict) or not {"optimizer", "lr_scheduler"} <= set(saved):
        raise _unusable(path, folder, "is not a refbench optimizer state")
    return saved


def _read_state(path: Path, folder: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise _unusable(path, folder, "is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _unusable(path, folder, f"is not readable JSON ({_first_line(exc)})") from None
    missing = [key for key in STATE_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise _unusable(path, folder, f"lacks {', '.join(missing)}")
    return state


def load_checkpoint(folder: Path) -> dict[str, Any]:
    """Every file of a checkpoint, checked; a missing or corrupt one is a ``CheckpointError``.
    A sharded checkpoint's shards are read later, into the sharded models (``load_sharded_into``)."""
    folder = Path(folder)
    state = _read_state(folder / STATE_FILE, folder)
    if state.get("sharded"):
        return _sharded_checkpoint(folder, state)
    reference_file = folder / "reference.safetensors"
    optimizer = _read_optimizer(folder / "optimizer.pt", folder)
    return {
        "policy": _read_safetensors(folder / "policy.safetensors", folder),
        "reference": _read_safetensors(reference_file, folder) if reference_file.exists() else None,
        "optimizer": optimizer["optimizer"],
        "lr_scheduler": optimizer["lr_scheduler"],
        "state": state,
    }


def _sharded_checkpoint(folder: Path, state: dict[str, Any]) -> dict[str, Any]:
    needed = [SHARDED_FOLDERS["policy"], SHARDED_FOLDERS["optimizer"]]
    if state["sharded"].get("reference"):
        needed.append(SHARDED_FOLDERS["reference"])
    for name in needed:
        if not (folder / name / ".metadata").is_file():
            raise _unusable(folder / name, folder, "is missing or incomplete (no .metadata)")
    path = folder / "lr_scheduler.pt"
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise _unusable(path, folder, "is missing") from None
    except Exception as exc:
        raise _unusable(path, folder, f"is corrupt or truncated ({_first_line(exc)})") from None
    if not isinstance(saved, dict) or "lr_scheduler" not in saved:
        raise _unusable(path, folder, "is not a refbench lr-schedule state")
    return {"sharded": True, "folder": folder, "lr_scheduler": saved["lr_scheduler"], "state": state}


def read_sharded_weights(folder: Path, part: str) -> dict[str, torch.Tensor]:
    """A sharded checkpoint's ``part`` ("policy" or "reference") as one whole state dict, read in a
    single process (``torch.distributed.checkpoint``'s converter; for analyses, not for resuming)."""
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    folder = Path(folder)
    source = folder / SHARDED_FOLDERS[part]
    if not (source / ".metadata").is_file():
        raise _unusable(source, folder, "is missing or incomplete (no .metadata)")
    with tempfile.TemporaryDirectory(prefix="refbench-dcp-") as scratch:
        whole = Path(scratch) / "whole.pt"
        dcp_to_torch_save(source, whole)
        return torch.load(whole, map_location="cpu", weights_only=True)["model"]
