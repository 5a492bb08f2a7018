"""A released denoiser (``refbench generate NAME --unet SOURCE``): where its files are, and their sha256.

``SOURCE`` is a local folder or a hub model id. A diffusers UNet is a folder holding
``config.json`` and its weights (``diffusion_pytorch_model.safetensors``); a repository or
folder may hold it at its root or in a ``unet/`` subfolder, as the released Diffusion-DPO
checkpoints ``mhdang/dpo-sd1.5-text2image-v1`` and ``mhdang/dpo-sdxl-text2image-v1`` do (UNet
only, in ``unet/``). Only that folder is downloaded (config and weights, not a whole repository),
into the hub cache; with ``HF_HUB_OFFLINE=1`` only the cache is read. Anything not found is one
line (a :class:`RefbenchError`, which the command line prints as one ``error:`` line).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import RefbenchError
from ..hub import SourceNotFound, hub_reason, local_path, looks_local
from .weights import WEIGHT_SUFFIXES, digest

__all__ = ["resolve_denoiser", "denoiser_sha256"]

SUBFOLDER = "unet"
_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model*.safetensors", "*.safetensors.index.json")


def resolve_denoiser(source: str) -> Path:
    """The local folder (config.json + weights) of the denoiser ``source``."""
    try:
        return _resolve(source)
    except SourceNotFound as exc:
        raise RefbenchError(str(exc)) from None


def _resolve(source: str) -> Path:
    if looks_local(source):
        path = local_path(source)
        for folder in (path, path / SUBFOLDER):
            if (folder / "config.json").is_file():
                return folder
        raise RefbenchError(
            f"--unet {source}: no config.json in it or in its {SUBFOLDER}/ folder (a diffusers UNet folder "
            f"holds config.json and diffusion_pytorch_model.safetensors)"
        )
    return _from_hub(source)


def _from_hub(repo: str) -> Path:
    import huggingface_hub
    from huggingface_hub import errors

    failure: BaseException | None = None
    for prefix in (f"{SUBFOLDER}/", ""):
        try:
            config = Path(huggingface_hub.hf_hub_download(repo, f"{prefix}config.json"))
        except (OSError, errors.EntryNotFoundError, errors.HFValidationError) as exc:
            failure = failure or exc
            continue
        try:
            huggingface_hub.snapshot_download(repo, allow_patterns=[prefix + pattern for pattern in _WEIGHTS])
        except (OSError, errors.EntryNotFoundError, errors.HFValidationError) as exc:
            raise SourceNotFound(f"--unet {repo}: its weights cannot be had: {hub_reason(exc)}") from exc
        return config.parent
    raise SourceNotFound(
        f"--unet {repo}: no such folder here, and as a hub id ({SUBFOLDER}/config.json or config.json) "
        f"{hub_reason(failure)}"
    )


def denoiser_sha256(folder: Path) -> str:
    """sha256 of the weight files directly in ``folder``, in name order (which weights made a sample)."""
    files = sorted(f for f in Path(folder).iterdir() if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise RefbenchError(f"--unet: no weight files ({', '.join(WEIGHT_SUFFIXES)}) in {folder}")
    return digest(files)
