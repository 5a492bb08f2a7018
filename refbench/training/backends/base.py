"""What every backend provides, and the conditioning it hands to the UNet."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...errors import ConfigError
from ...method.losses import per_sample_error


WEIGHT_SUFFIXES = (".safetensors", ".bin")


def check_weights(folder: Path, parts: tuple[str, ...]) -> None:
    """One ConfigError sentence if a model folder lacks a part or a part has no weight file."""
    for part in parts:
        sub = folder / part
        if not (sub / "config.json").is_file():
            raise ConfigError(f"model.pretrained: {folder} has no {part}/config.json; a diffusers model folder needs {', '.join(parts)}")
        if not any(f.name.endswith(WEIGHT_SUFFIXES) for f in sub.iterdir()):
            raise ConfigError(f"model.pretrained: {folder} has no weights in {part}/ (expected a .safetensors or .bin file)")


@dataclass
class Conditioning:
    """Per-sample UNet conditioning: text hidden states, plus SDXL's added kwargs."""

    hidden: torch.Tensor
    added: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.hidden.shape[0]

    def repeat(self, times: int) -> "Conditioning":
        """The batch repeated ``times`` over, in order (winners' then losers' copy)."""
        return Conditioning(self.hidden.repeat(times, *[1] * (self.hidden.dim() - 1)),
                            {k: v.repeat(times, *[1] * (v.dim() - 1)) for k, v in self.added.items()})

    def select(self, index: slice | torch.Tensor) -> "Conditioning":
        return Conditioning(self.hidden[index], {k: v[index] for k, v in self.added.items()})

    def to(self, device, dtype=None) -> "Conditioning":
        return Conditioning(self.hidden.to(device, dtype), {k: v.to(device, dtype) for k, v in self.added.items()})


class Backend:
    """Subclasses set ``unet`` (the trainable denoiser: a UNet, or SD3's transformer),
    ``noise_scheduler`` and implement the encoders."""

    kind: str
    lora_targets: tuple[str, ...] = ("to_k", "to_q", "to_v", "to_out.0")  # modelset.UNET_LORA_TARGETS
    unet: torch.nn.Module
    noise_scheduler: object
    device: torch.device
    dtype: torch.dtype = torch.float32  # of frozen parts and inputs

    # -- schedule ----------------------------------------------------------------------
    @property
    def num_train_timesteps(self) -> int:
        return int(self.noise_scheduler.config.num_train_timesteps)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self.noise_scheduler.alphas_cumprod.to(torch.float64)

    @property
    def prediction_type(self) -> str:
        return str(self.noise_scheduler.config.prediction_type)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self.noise_scheduler.add_noise(x0, noise, timesteps)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the UNet is trained to predict: eps, or v for v-prediction models."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            return self.noise_scheduler.get_velocity(x0, noise, timesteps)
        raise ValueError(f"unsupported prediction type {self.prediction_type!r}")

    # -- encoders (subclasses) -----------------------------------------------------------
    def encode_images(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> the diffusion space x0 (pixels or VAE latents)."""
        raise NotImplementedError

    def encode_text(self, captions: list[str]) -> Conditioning:
        raise NotImplementedError

    def fresh_unet(self) -> torch.nn.Module:
        """A new copy of the initial UNet, loaded from its source (for the initial model)."""
        raise NotImplementedError

    # -- the UNet call -----------------------------------------------------------------
    def predict(self, unet: torch.nn.Module, x_t: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        kwargs = {"added_cond_kwargs": cond.added} if cond.added else {}
        return unet(x_t, timesteps, encoder_hidden_states=cond.hidden, **kwargs).sample

    def errors(self, unet, x_t, timesteps, cond, target) -> torch.Tensor:
        """Per-sample denoising error of ``unet`` on the given noisy inputs."""
        return per_sample_error(self.predict(unet, x_t, timesteps, cond), target)
