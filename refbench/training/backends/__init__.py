"""Model backends: one interface over the toy worlds (UNet, flow), SD1.5 / SDXL and SD3 / SD3.5.

A backend owns the frozen parts (text encoders, VAE, noise scheduler) and the trainable
denoiser (a UNet, or an SD3 transformer), and turns captions and uint8 images into what the
denoiser consumes. The trainer only talks to this interface, so every method runs the same
code on every model.

This module is the registry: each model kind (``model.kind``; the names and "module:Class"
strings are in ``refbench.model_kinds``, which ``config`` validates against) has one backend
class, and everything that depends on the kind is asked of that class. No code outside the
registry compares kinds.
"""

from __future__ import annotations

from importlib import import_module

from ...config import ModelConfig
from ...errors import ConfigError
from ...model_kinds import MODEL_KINDS
from .base import Backend, Conditioning

__all__ = ["Backend", "Conditioning", "backend_class", "load_backend", "check_model_source", "model_kinds"]


def backend_class(kind: str) -> type[Backend]:
    """The backend class of a model kind (its module imported on first use)."""
    if kind not in MODEL_KINDS:
        raise ConfigError(f"model.kind: must be one of {', '.join(MODEL_KINDS)}; got {kind!r}")
    module, name = MODEL_KINDS[kind].backend.split(":")
    return getattr(import_module(module), name)


def model_kinds() -> dict[str, str]:
    """Every kind with its one-line summary, in the registry's order."""
    return {kind: backend_class(kind).summary for kind in MODEL_KINDS}


def check_model_source(model: ModelConfig) -> None:
    """Fail before any data is read if the model cannot be found (one ConfigError line)."""
    backend_class(model.kind).check_source(model)


def load_backend(
    model: ModelConfig,
    device: str = "cpu",
    *,
    denoiser: bool = True,
    encoders: bool = True,
    denoiser_device: str | None = None,
) -> Backend:
    """The model's backend; ``denoiser=False`` skips the denoiser (building a latent cache) and
    ``encoders=False`` the VAE and text encoders (training from a latent cache). The toy models'
    parts are small and always load. ``denoiser_device`` (default ``device``): where the denoiser is
    loaded (the CPU under FSDP, which moves each rank's shards to ``device``)."""
    return backend_class(model.kind)(
        model, device, denoiser=denoiser, encoders=encoders, denoiser_device=denoiser_device
    )
