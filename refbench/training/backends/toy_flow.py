"""The flow-matching toy world's backend: a 16 px pixel-space SD3 transformer with the toy's
frozen CLIP text encoder (``toy.flow_model``). The schedule is ``FlowBackend``'s."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...config import ModelConfig
from ...errors import ConfigError
from .base import Conditioning, check_weights
from .flow import FlowBackend


def toy_flow_folder(pretrained: str) -> Path:
    from ...toy.flow_model import FLOW_CHECKPOINT

    if pretrained in ("toy-flow:base", "toy-flow"):
        return FLOW_CHECKPOINT
    folder = Path(pretrained)
    if not folder.is_dir():
        raise ConfigError(f"model.pretrained: no flow toy model at {folder} (expected transformer/, text_encoder/, tokenizer/, scheduler/)")
    check_weights(folder, ("transformer", "text_encoder"))
    return folder


class ToyFlowBackend(FlowBackend):
    kind = "toy-flow"

    def __init__(self, model: ModelConfig, device: str = "cpu"):
        from ...toy.flow_model import load_flow_components

        self.folder = toy_flow_folder(model.pretrained)
        self.device = torch.device(device)
        try:
            self.components = load_flow_components(self.folder)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"model.pretrained: cannot load the flow toy model at {self.folder}: {str(exc).splitlines()[0]}") from None
        self.components.text_encoder.to(self.device)
        self.unet = self.components.transformer.to(self.device)
        self.noise_scheduler = self.components.noise_scheduler
        self.resolution = int(self.unet.config.sample_size)
        if model.resolution != self.resolution:
            raise ConfigError(f"model.resolution: the flow toy model works at {self.resolution} px; got {model.resolution}")
        self._text_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def encode_images(self, images: np.ndarray) -> torch.Tensor:
        from ...toy.model import images_to_tensor

        return images_to_tensor(images).to(self.device)

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> Conditioning:
        from ...toy.flow_model import encode_flow_prompts

        missing = sorted({c for c in captions if c not in self._text_cache})
        if missing:
            hidden, pooled = encode_flow_prompts(self.components, missing)
            for caption, h, p in zip(missing, hidden, pooled):
                self._text_cache[caption] = (h, p)
        hidden = torch.stack([self._text_cache[c][0] for c in captions]).to(self.device)
        pooled = torch.stack([self._text_cache[c][1] for c in captions]).to(self.device)
        return Conditioning(hidden, {"pooled_projections": pooled})

    def fresh_unet(self) -> torch.nn.Module:
        from diffusers import SD3Transformer2DModel

        return SD3Transformer2DModel.from_pretrained(str(self.folder / "transformer")).to(self.device)
