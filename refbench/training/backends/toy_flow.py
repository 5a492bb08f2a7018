"""The flow-matching toy world's backend: a 16 px pixel-space SD3 transformer with the toy's
frozen CLIP text encoder (``toy.flow_model``). The schedule is ``FlowBackend``'s; the model
folder, pixels and prompt cache are ``ToyWorld``'s."""

from __future__ import annotations

from pathlib import Path

import torch

from ...config import ModelConfig
from .base import Conditioning
from .flow import FlowBackend
from .toy import ToyWorld, resolve_toy_folder


def toy_flow_folder(pretrained: str) -> Path:
    from ...toy.flow_model import FLOW_CHECKPOINT

    return resolve_toy_folder(
        pretrained,
        aliases=("toy-flow:base", "toy-flow"),
        default=FLOW_CHECKPOINT,
        parts=("transformer", "text_encoder"),
        what="flow toy model",
    )


class ToyFlowBackend(ToyWorld, FlowBackend):
    kind = "toy-flow"
    summary = (
        "the flow-matching toy world: a 16 px pixel-space SD3 transformer (rectified flow), the toy's text encoder"
    )
    model_folder = staticmethod(toy_flow_folder)

    def __init__(
        self,
        model: ModelConfig,
        device: str = "cpu",
        *,
        denoiser: bool = True,
        encoders: bool = True,
        denoiser_device: str | None = None,
    ):
        """The parts are small: all load, whatever ``denoiser`` and ``encoders`` say."""
        from ...toy.flow_model import load_flow_components

        self.folder = toy_flow_folder(model.pretrained)
        self.device = torch.device(device)
        self.components = self._load(load_flow_components, self.folder, model, "flow toy model")
        self.components.text_encoder.to(self.device)
        self.denoiser = self.components.transformer.to(denoiser_device or self.device)
        self.noise_scheduler = self.components.noise_scheduler

    @classmethod
    def sampler(cls, model: ModelConfig, final: Path | None, denoiser_path: Path | None = None):
        from .samplers import ToyFlowSampler

        denoiser = denoiser_path or (final / cls.denoiser_folder if final else None)
        return ToyFlowSampler(toy_flow_folder(model.pretrained), denoiser)

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> Conditioning:
        from ...toy.flow_model import encode_flow_prompts

        hidden, pooled = self._cached_text(captions, lambda texts: encode_flow_prompts(self.components, texts))
        return Conditioning(hidden, {"pooled_projections": pooled})

    def fresh_denoiser(self) -> torch.nn.Module:
        from diffusers import SD3Transformer2DModel

        return SD3Transformer2DModel.from_pretrained(str(self.folder / "transformer")).to(self.device)
