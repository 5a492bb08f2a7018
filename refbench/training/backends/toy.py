"""The embedded toy world's backend (kind ``toy``): a 16 px pixel-space UNet with a small CLIP text encoder.

During preference training only the UNet learns; the text encoder is frozen, as in SD.
``ToyWorld`` holds what it shares with the flow toy world's backend (``toy_flow.py``): the model
folder, loading, pixel space, and each prompt embedded once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ...config import ModelConfig
from ...errors import ConfigError
from ...toy.sampling import DEFAULT_GUIDANCE_SCALE
from .base import Backend, Conditioning, check_weights, weights_digest


def resolve_toy_folder(
    pretrained: str, *, aliases: tuple[str, ...], default: Path, parts: tuple[str, ...], what: str
) -> Path:
    """A toy model's folder: the committed one for an alias, else a folder with weights in ``parts``."""
    if pretrained in aliases:
        return default
    folder = Path(pretrained)
    if not folder.is_dir():
        expected = ", ".join(f"{p}/" for p in (*parts, "tokenizer", "scheduler"))
        raise ConfigError(f"model.pretrained: no {what} at {folder} (expected {expected})")
    check_weights(folder, parts)
    return folder


def toy_model_folder(pretrained: str) -> Path:
    from ...toy.model import BASE_CHECKPOINT

    return resolve_toy_folder(
        pretrained,
        aliases=("toy:base", "toy"),
        default=BASE_CHECKPOINT,
        parts=("unet", "text_encoder"),
        what="toy model",
    )


class ToyWorld:
    """Mixin of both toy backends: the model folder (``model_folder``, from ``model.pretrained``),
    ``_load`` the components, pixels in [-1, 1], cached prompts."""

    device: torch.device
    default_guidance = DEFAULT_GUIDANCE_SCALE
    default_prompts = "toy-test"
    analysis_pairs = 256
    model_folder: Callable[[str], Path]

    @classmethod
    def check_source(cls, model: ModelConfig) -> None:
        cls.model_folder(model.pretrained)

    @classmethod
    def encoder_fingerprint(cls, model: ModelConfig) -> dict[str, str]:
        source = str(cls.model_folder(model.pretrained))
        return {"image_encoder": "pixels", "text_encoders": weights_digest(source, ("text_encoder",))}

    def _load(self, load: Callable, folder: Path, model: ModelConfig, what: str):
        try:
            components = load(folder)
        except (OSError, ValueError) as exc:  # truncated or mismatched weight files
            raise ConfigError(
                f"model.pretrained: cannot load the {what} at {folder}: {str(exc).splitlines()[0]}"
            ) from None
        self.resolution = int(components.unet.config.sample_size)
        if model.resolution != self.resolution:
            raise ConfigError(f"model.resolution: the {what} works at {self.resolution} px; got {model.resolution}")
        self._text_cache: dict[str, tuple[torch.Tensor, ...]] = {}
        return components

    def encode_images(self, images: np.ndarray) -> torch.Tensor:
        from ...toy.model import images_to_tensor

        return images_to_tensor(images).to(self.device)

    def _cached_text(self, captions: list[str], encode: Callable) -> list[torch.Tensor]:
        """Per output of ``encode(texts) -> tuple of (N, ...) tensors``, the captions' rows stacked.
        The grammar has a few hundred prompts: each is embedded once."""
        missing = sorted({c for c in captions if c not in self._text_cache})
        if missing:
            for caption, parts in zip(missing, zip(*encode(missing))):
                self._text_cache[caption] = parts
        rows = [self._text_cache[c] for c in captions]
        return [torch.stack([row[i] for row in rows]).to(self.device) for i in range(len(rows[0]))]


class ToyBackend(ToyWorld, Backend):
    kind = "toy"
    summary = "the built-in toy world: a 16 px pixel-space UNet (DDPM) with a small CLIP text encoder"
    model_folder = staticmethod(toy_model_folder)

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
        from ...toy.model import load_components

        self.folder = toy_model_folder(model.pretrained)
        self.device = torch.device(device)
        self.components = self._load(load_components, self.folder, model, "toy model")
        self.components.text_encoder.requires_grad_(False).to(self.device)
        self.denoiser = self.components.unet.to(denoiser_device or self.device)
        self.noise_scheduler = self.components.noise_scheduler

    @classmethod
    def sampler(cls, model: ModelConfig, final: Path | None, denoiser_path: Path | None = None):
        from .samplers import ToySampler

        denoiser = denoiser_path or (final / cls.denoiser_folder if final else None)
        return ToySampler(toy_model_folder(model.pretrained), denoiser)

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> Conditioning:
        from ...toy.model import encode_prompts

        (hidden,) = self._cached_text(captions, lambda texts: (encode_prompts(self.components, texts),))
        return Conditioning(hidden)

    def fresh_denoiser(self) -> torch.nn.Module:
        from diffusers import UNet2DConditionModel

        return UNet2DConditionModel.from_pretrained(str(self.folder / "unet")).to(self.device)
