"""Training checkpoints: everything ``--resume`` needs to continue bit for bit.

A checkpoint is a folder ``RUN/checkpoint`` holding the policy's weights, the reference's
weights (when it can differ from the initial model), the optimizer and lr-schedule
states, and ``state.json`` (step, reference-update state, counters). The initial model
is not saved: it is reloaded from its source. Randomness needs no saved state: noise,
timesteps and data order are functions of (seed, step). A checkpoint is written to a
temporary folder and renamed into place, so a kill during the write leaves the previous
one intact.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "state.json"


def save_checkpoint(folder: Path, *, policy: dict[str, torch.Tensor], reference: dict[str, torch.Tensor] | None,
                    optimizer: dict, lr_scheduler: dict, state: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in policy.items()}, str(partial / "policy.safetensors"))
    if reference is not None:
        save_file({k: v.detach().contiguous().cpu() for k, v in reference.items()}, str(partial / "reference.safetensors"))
    torch.save({"optimizer": optimizer, "lr_scheduler": lr_scheduler}, partial / "optimizer.pt")
    (partial / STATE_FILE).write_text(json.dumps(state, indent=1))
    previous = folder.with_name(folder.name + ".previous")
    shutil.rmtree(previous, ignore_errors=True)
    if folder.exists():
        folder.rename(previous)
    partial.rename(folder)
    shutil.rmtree(previous, ignore_errors=True)


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


def load_checkpoint(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    folder = Path(folder)
    reference_file = folder / "reference.safetensors"
    optimizer = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=False)
    return {
        "policy": load_file(str(folder / "policy.safetensors")),
        "reference": load_file(str(reference_file)) if reference_file.is_file() else None,
        "optimizer": optimizer["optimizer"],
        "lr_scheduler": optimizer["lr_scheduler"],
        "state": json.loads((folder / STATE_FILE).read_text()),
    }
