"""Stable Diffusion 1.5 and SDXL (kinds ``sd15``, ``sdxl``): latent diffusion with frozen VAE and CLIP text encoders.

Follows the official Diffusion-DPO code (train.py) for what the UNet (the denoiser) sees:
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
from .base import Backend, Conditioning, check_weights, image_encoder_digest, pipeline_sampler, weights_digest

# The released models' configurations (diffusers' and transformers' config.json), for
# `refbench bench --full-size` (``bench.full_size``): the UNet, the VAE and each text encoder.
SD15_FULL_SIZE = {
    "unet": dict(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768,
        attention_head_dim=8,
    ),
    "vae": dict(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    ),
    "text": [
        dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            projection_dim=768,
            hidden_act="quick_gelu",
        )
    ],
    "resolution": 512,
}
SDXL_FULL_SIZE = {
    "unet": dict(
        sample_size=128,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    ),
    "vae": dict(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=2,
        sample_size=1024,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        scaling_factor=0.13025,
    ),
    "text": [
        dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            projection_dim=768,
            hidden_act="quick_gelu",
        ),
        dict(
            hidden_size=1280,
            intermediate_size=5120,
            num_hidden_layers=32,
            num_attention_heads=20,
            projection_dim=1280,
            hidden_act="gelu",
        ),
    ],
    "resolution": 1024,
}


def check_pipeline_source(source: str) -> None:
    path = Path(source)
    if path.exists():
        if not (path / "unet" / "config.json").is_file():
            raise ConfigError(f"model.pretrained: {path} is not a diffusers pipeline folder (no unet/config.json)")
        check_weights(path, ("unet", "vae", "text_encoder"))
        return
    if source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise ConfigError(f"model.pretrained: {source} does not exist (give a local diffusers folder or a hub id)")


class StableDiffusionBackend(Backend):
    """SD1.5, and the base of SDXL (``StableDiffusionXLBackend``), which adds a text encoder."""

    kind = "sd15"
    summary = "Stable Diffusion 1.5: a latent UNet (DDPM), 4-channel VAE, one CLIP text encoder"
    default_guidance = 7.5
    full_size = SD15_FULL_SIZE
    # (tokenizer, text encoder, its transformers class) per text encoder, in the pipeline's order
    text_parts = (("tokenizer", "text_encoder", "CLIPTextModel"),)

    @classmethod
    def check_source(cls, model: ModelConfig) -> None:
        check_pipeline_source(model.pretrained)

    @classmethod
    def encoder_fingerprint(cls, model: ModelConfig) -> dict[str, str]:
        parts = tuple(encoder for _, encoder, _ in cls.text_parts)
        return {"image_encoder": image_encoder_digest(model), "text_encoders": weights_digest(model.pretrained, parts)}

    @classmethod
    def sampler(cls, model: ModelConfig, final: Path | None, denoiser_path: Path | None = None):
        return pipeline_sampler(cls, model, final, denoiser_path)

    @classmethod
    def build_tiny(cls, folder: str | Path, *, seed: int = 0, **options) -> Path:
        from ...tiny import build_tiny_pipeline

        return build_tiny_pipeline(folder, seed=seed)

    @classmethod
    def write_pipeline_index(cls, folder: Path) -> None:
        from ...tiny import write_pipeline_index

        write_pipeline_index(folder, sdxl=False)

    def __init__(
        self,
        model: ModelConfig,
        device: str = "cpu",
        *,
        denoiser: bool = True,
        encoders: bool = True,
        denoiser_device: str | None = None,
    ):
        import transformers
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTokenizer

        self.source = model.pretrained
        self.device = torch.device(device)
        self.resolution = model.resolution
        # Frozen parts in half precision only where there is a GPU to use it.
        half = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(model.mixed_precision)
        self.dtype = half if (half is not None and self.device.type == "cuda") else torch.float32
        check_pipeline_source(self.source)
        self.denoiser, self.vae, self.tokenizers, self.text_encoders = None, None, [], []
        try:
            if denoiser:
                self.denoiser = UNet2DConditionModel.from_pretrained(self.source, subfolder="unet").to(
                    denoiser_device or self.device
                )
            self.noise_scheduler = DDPMScheduler.from_pretrained(self.source, subfolder="scheduler")
            if encoders:
                self.vae = None if model.vae else AutoencoderKL.from_pretrained(self.source, subfolder="vae")
                for tokenizer, encoder, encoder_class in self.text_parts:
                    self.tokenizers.append(CLIPTokenizer.from_pretrained(self.source, subfolder=tokenizer))
                    self.text_encoders.append(
                        getattr(transformers, encoder_class).from_pretrained(self.source, subfolder=encoder)
                    )
        except (OSError, ValueError) as exc:
            if not Path(self.source).exists():  # a local path with a typo is tried as a hub id: say both
                raise ConfigError(
                    f"model.pretrained: cannot load {self.source}: no file or folder of that name exists, "
                    f"and as a hub id: {str(exc).splitlines()[0]}"
                ) from None
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

    def _token_ids(self, captions: list[str]):
        """Per text encoder: (the captions' token ids, padded to the tokenizer's length; the encoder)."""
        for tokenizer, encoder in zip(self.tokenizers, self.text_encoders):
            ids = tokenizer(
                list(captions),
                max_length=tokenizer.model_max_length,
                padding="max_length",
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(self.device)
            yield ids, encoder

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> Conditioning:
        hidden = torch.cat([encoder(ids)[0] for ids, encoder in self._token_ids(captions)], dim=-1).float()
        return Conditioning(hidden)

    def fresh_denoiser(self) -> torch.nn.Module:
        from diffusers import UNet2DConditionModel

        return UNet2DConditionModel.from_pretrained(self.source, subfolder="unet").to(self.device)


class StableDiffusionXLBackend(StableDiffusionBackend):
    """SDXL: a second text encoder; the UNet sees both encoders' penultimate states, the second's
    pooled projection and the image size (``time_ids``)."""

    kind = "sdxl"
    summary = "Stable Diffusion XL: a latent UNet (DDPM) with two CLIP text encoders and size conditioning"
    pipeline_name = "StableDiffusionXLPipeline"
    default_guidance = 5.0
    full_size = SDXL_FULL_SIZE
    text_parts = StableDiffusionBackend.text_parts + (("tokenizer_2", "text_encoder_2", "CLIPTextModelWithProjection"),)

    @classmethod
    def build_tiny(cls, folder: str | Path, *, seed: int = 0, **options) -> Path:
        from ...tiny import build_tiny_pipeline

        return build_tiny_pipeline(folder, sdxl=True, seed=seed)

    @classmethod
    def write_pipeline_index(cls, folder: Path) -> None:
        from ...tiny import write_pipeline_index

        write_pipeline_index(folder, sdxl=True)

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> Conditioning:
        hidden_states, pooled = [], None
        for ids, encoder in self._token_ids(captions):
            output = encoder(ids, output_hidden_states=True)
            hidden_states.append(output.hidden_states[-2])
            pooled = output[0]  # the last encoder's pooled projection
        hidden = torch.cat(hidden_states, dim=-1).float()
        size = float(self.resolution)
        time_ids = torch.tensor([[size, size, 0.0, 0.0, size, size]], device=self.device).repeat(len(captions), 1)
        return Conditioning(hidden, {"text_embeds": pooled.float(), "time_ids": time_ids})
