"""Stable Diffusion 1.5 and SDXL: latent diffusion with frozen VAE and CLIP text encoders.

Follows the official Diffusion-DPO code (train.py) for what the UNet sees:
- SD1.5: the text encoder's last hidden state;
- SDXL: both encoders' penultimate hidden states concatenated, the second encoder's
  pooled projection, and ``time_ids`` = (H, W, 0, 0, H, W) for uncropped square images.
Latents are the VAE posterior's mean times ``scaling_factor``; the official code draws a
sample, but the posterior's spread is tiny next to the diffusion noise, and the mean is
deterministic, which makes the latent cache (``data.latent_cache``) exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...config import ModelConfig
from ...errors import ConfigError
from .base import Backend, Conditioning, check_weights


def check_source(source: str) -> None:
    path = Path(source)
    if path.exists():
        if not (path / "unet" / "config.json").is_file():
            raise ConfigError(f"model.pretrained: {path} is not a diffusers pipeline folder (no unet/config.json)")
        check_weights(path, ("unet", "vae", "text_encoder"))
        return
    if source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise ConfigError(f"model.pretrained: {source} does not exist (give a local diffusers folder or a hub id)")


class StableDiffusionBackend(Backend):
    def __init__(self, model: ModelConfig, device: str = "cpu", *, unet: bool = True, encoders: bool = True):
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        self.kind = model.kind
        self.source = model.pretrained
        self.device = torch.device(device)
        self.resolution = model.resolution
        # Frozen parts in half precision only where there is a GPU to use it.
        half = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(model.mixed_precision)
        self.dtype = half if (half is not None and self.device.type == "cuda") else torch.float32
        check_source(self.source)
        self.unet, self.vae, self.tokenizers, self.text_encoders = None, None, [], []
        try:
            if unet:
                self.unet = UNet2DConditionModel.from_pretrained(self.source, subfolder="unet").to(self.device)
            self.noise_scheduler = DDPMScheduler.from_pretrained(self.source, subfolder="scheduler")
            if encoders:
                self.vae = None if model.vae else AutoencoderKL.from_pretrained(self.source, subfolder="vae")
                self.tokenizers = [CLIPTokenizer.from_pretrained(self.source, subfolder="tokenizer")]
                self.text_encoders = [CLIPTextModel.from_pretrained(self.source, subfolder="text_encoder")]
                if self.kind == "sdxl":
                    self.tokenizers.append(CLIPTokenizer.from_pretrained(self.source, subfolder="tokenizer_2"))
                    self.text_encoders.append(CLIPTextModelWithProjection.from_pretrained(self.source, subfolder="text_encoder_2"))
        except (OSError, ValueError) as exc:
            if not Path(self.source).exists():  # a local path with a typo is tried as a hub id: say both
                raise ConfigError(f"model.pretrained: cannot load {self.source}: no file or folder of that name exists, "
                                  f"and as a hub id: {str(exc).splitlines()[0]}") from None
            raise ConfigError(f"model.pretrained: cannot load {self.source}: {str(exc).splitlines()[0]}") from None
        if encoders and model.vae:  # another VAE (the SDXL preset's fp16-fix, as the official launcher loads)
            try:
                self.vae = AutoencoderKL.from_pretrained(model.vae)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"model.vae: cannot load {model.vae}: {str(exc).splitlines()[0]}") from None
        # The VAE stays in fp32 unless model.vae_fp32 is off (SD's VAE overflows in fp16).
        self.vae_dtype = torch.float32 if model.vae_fp32 else self.dtype
        for module in (m for m in (self.vae, *self.text_encoders) if m is not None):
            module.requires_grad_(False).eval().to(self.device)
            dtype = self.vae_dtype if module is self.vae else self.dtype
            if dtype != torch.float32:
                module.to(dtype=dtype)

    @torch.no_grad()
    def encode_images(self, images: np.ndarray) -> torch.Tensor:
        # NCHW in memory, as torchvision's ToTensor gives the official loop: the VAE's convolutions run
        # about 10% slower on the channels-last view a bare permute leaves.
        pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous().float() / 127.5 - 1.0
        posterior = self.vae.encode(pixels.to(self.device, self.vae_dtype)).latent_dist
        return (posterior.mean * self.vae.config.scaling_factor).float()

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> Conditioning:
        hidden_states, pooled = [], None
        for tokenizer, encoder in zip(self.tokenizers, self.text_encoders):
            ids = tokenizer(list(captions), max_length=tokenizer.model_max_length, padding="max_length",
                            truncation=True, return_tensors="pt").input_ids.to(self.device)
            if self.kind == "sdxl":
                output = encoder(ids, output_hidden_states=True)
                hidden_states.append(output.hidden_states[-2])
                pooled = output[0]  # the last encoder's pooled projection
            else:
                hidden_states.append(encoder(ids)[0])
        hidden = torch.cat(hidden_states, dim=-1).float()
        if self.kind != "sdxl":
            return Conditioning(hidden)
        size = float(self.resolution)
        time_ids = torch.tensor([[size, size, 0.0, 0.0, size, size]], device=self.device).repeat(len(captions), 1)
        return Conditioning(hidden, {"text_embeds": pooled.float(), "time_ids": time_ids})

    def fresh_unet(self) -> torch.nn.Module:
        from diffusers import UNet2DConditionModel

        return UNet2DConditionModel.from_pretrained(self.source, subfolder="unet").to(self.device)
