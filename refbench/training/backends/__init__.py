"""Model backends: one interface over the toy worlds (UNet, flow), SD1.5 / SDXL and SD3 / SD3.5.

A backend owns the frozen parts (text encoders, VAE, noise scheduler) and the trainable
UNet, and turns captions and uint8 images into what the UNet consumes. The trainer only
talks to this interface, so every method runs the same code on every model.
"""

from __future__ import annotations

from ...config import ModelConfig
from .base import Backend, Conditioning

__all__ = ["Backend", "Conditioning", "load_backend", "check_model_source"]


def check_model_source(model: ModelConfig) -> None:
    """Fail before any data is read if the model cannot be found (one ConfigError line)."""
    if model.kind == "toy":
        from .toy import toy_model_folder

        toy_model_folder(model.pretrained)
    elif model.kind == "toy-flow":
        from .toy_flow import toy_flow_folder

        toy_flow_folder(model.pretrained)
    elif model.kind == "sd3":
        from .flow import check_sd3_source

        check_sd3_source(model.pretrained)
    else:
        from .sd import check_source

        check_source(model.pretrained)


def load_backend(model: ModelConfig, device: str = "cpu", *, unet: bool = True, encoders: bool = True) -> Backend:
    """The model's backend; ``unet=False`` skips the UNet (building a latent cache) and
    ``encoders=False`` the VAE and text encoders (training from a latent cache). The toy model's
    parts are small and always load."""
    if model.kind == "toy":
        from .toy import ToyBackend

        return ToyBackend(model, device)
    if model.kind == "toy-flow":
        from .toy_flow import ToyFlowBackend

        return ToyFlowBackend(model, device)
    if model.kind == "sd3":
        from .flow import SD3Backend

        return SD3Backend(model, device, unet=unet, encoders=encoders)
    from .sd import StableDiffusionBackend

    return StableDiffusionBackend(model, device, unet=unet, encoders=encoders)
