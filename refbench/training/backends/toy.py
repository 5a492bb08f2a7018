"""The embedded toy world's backend: a 16 px pixel-space UNet with a small CLIP text encoder.

During preference training only the UNet learns; the text encoder is frozen, as in SD.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...config import ModelConfig
from ...errors import ConfigError
from .base import Backend, Conditioning, check_weights


def toy_model_folder(pretrained: str) -> Path:
    from ...toy.model import BASE_CHECKPOINT

    if pretrained in ("toy:base", "toy"):
        return BASE_CHECKPOINT
    folder = Path(pretrained)
    if not folder.is_dir():
        raise ConfigError(f"model.pretrained: no toy model at {folder} (expected unet/, text_encoder/, tokenizer/, scheduler/)")
    check_weights(folder, ("unet", "text_encoder"))
    return folder


class ToyBackend(Backend):
    kind = "toy"

    def __init__(self, model: ModelConfig, device: str = "cpu"):
        from ...toy.model import load_components

        self.folder = toy_model_folder(model.pretrained)
        self.device = torch.device(device)
        try:
            self.components = load_components(self.folder)
        except (OSError, ValueError) as exc:  # truncated or mismatched weight files
            raise ConfigError(f"model.pretrained: cannot load the toy model at {self.folder}: {str(exc).splitlines()[0]}") from None
        self.components.text_encoder.requires_grad_(False).to(self.device)
        self.unet = self.components.unet.to(self.device)
        self.noise_scheduler = self.components.noise_scheduler
        self.resolution = int(self.unet.config.sample_size)
        if model.resolution != self.resolution:
            raise ConfigError(f"model.resolution: the toy model works at {self.resolution} px; got {model.resolution}")
        self._text_cache: dict[str, torch.Tensor] = {}

    def encode_images(self, images: np.ndarray) -> torch.Tensor:
        from ...toy.model import images_to_tensor

        return images_to_tensor(images).to(self.device)

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> Conditioning:
        # The grammar has a few hundred prompts: embed each once.
        from ...toy.model import encode_prompts

        missing = sorted({c for c in captions if c not in self._text_cache})
        if missing:
            for caption, hidden in zip(missing, encode_prompts(self.components, missing)):
                self._text_cache[caption] = hidden
        return Conditioning(torch.stack([self._text_cache[c] for c in captions]).to(self.device))

    def fresh_unet(self) -> torch.nn.Module:
        from diffusers import UNet2DConditionModel

        return UNet2DConditionModel.from_pretrained(str(self.folder / "unet")).to(self.device)
