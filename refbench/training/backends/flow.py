"""Rectified-flow backends: SD3 / SD3.5 (``SD3Transformer2DModel``) and the flow toy world.

What changes from the DDPM backends is only the schedule (``method.flow``): the trainer still
draws an integer timestep t in [0, T) (large t noisy), and this backend turns it into the noise
level s(t) of the scheduler's training grid, the noisy input ``(1 - s) x0 + s eps``, the
velocity target ``eps - x0`` and the transformer's timestep ``s * T``. Per-sample errors are
then errors on v, and every loss, the reference-update rule and the divergence
D(ref, init) = mean over the monitor set of (err_ref - err_init)^2 work on them unchanged.

Which sigmas the trainer draws from: uniform over the scheduler's training grid (with its
shift), not SD3's logit-normal density. Diffusion-DPO draws t uniformly over its training
grid, and the paper's Cat(gamma^k) sampler is defined as a reweighting of those bins; keeping
the grid uniform makes ``diff-dpo`` the faithful translation and ``gamma`` a reweighting of the
same grid. The shift decides the grid: SD3's shift 3 puts half of the grid above s = 0.75.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...config import ModelConfig
from ...errors import ConfigError
from ...method.flow import equivalent_alphas_cumprod, flow_noisy, flow_velocity, model_timesteps, shifted_sigmas
from .base import (
    Backend,
    Conditioning,
    check_weights,
    diffusers_pipeline,
    image_encoder_digest,
    pipeline_sampler,
    weights_digest,
)

# LoRA on every attention projection of both streams (diffusers' train_dreambooth_lora_sd3.py
# default target modules): the joint blocks' text stream has its own q/k/v/out.
SD3_LORA_TARGETS = [
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
]


class FlowBackend(Backend):
    """Subclasses set ``denoiser`` (the transformer), ``noise_scheduler`` and the encoders."""

    flow = True
    denoiser_folder = "transformer"
    pipeline_name = "StableDiffusion3Pipeline"
    lora_targets = SD3_LORA_TARGETS

    @classmethod
    def save_lora(cls, layers: dict[str, torch.Tensor], folder: Path) -> None:
        """As diffusers' SD3 LoRA script saves: PEFT keys, under "transformer."."""
        diffusers_pipeline(cls.pipeline_name).save_lora_weights(
            str(folder), transformer_lora_layers=layers, safe_serialization=True
        )

    @property
    def sigmas(self) -> torch.Tensor:
        """s(t), t = 0..T-1, from the scheduler's own grid (its shift included)."""
        if getattr(self, "_sigmas", None) is None:
            config = self.noise_scheduler.config
            if config.get("use_dynamic_shifting"):
                raise ConfigError(
                    "scheduler: dynamic (resolution-dependent) shifting is a FLUX feature; "
                    "the SD3 recipe trains with a fixed shift"
                )
            grid = self.noise_scheduler.sigmas.to(torch.float64).flip(0)[: self.num_train_timesteps]
            # The same numbers as method.flow's formula; checked so that a scheduler whose grid is
            # not the training grid (a custom sigma schedule) fails here, not silently.
            expected = shifted_sigmas(self.num_train_timesteps, float(config.shift))
            if grid.shape != expected.shape or not torch.allclose(grid, expected, atol=1e-5):
                raise ConfigError(
                    "scheduler: its sigmas are not the shifted uniform training grid of "
                    "FlowMatchEulerDiscreteScheduler(shift); refbench trains on that grid only"
                )
            self._sigmas = expected
        return self._sigmas

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return equivalent_alphas_cumprod(self.sigmas)

    @property
    def prediction_type(self) -> str:
        return "flow"

    def _sigma(self, timesteps: torch.Tensor) -> torch.Tensor:
        return self.sigmas.to(timesteps.device)[timesteps]

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return flow_noisy(x0, noise, self._sigma(timesteps))

    def target(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return flow_velocity(x0, noise)

    def predict(
        self, model: torch.nn.Module, x_t: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning
    ) -> torch.Tensor:
        timestep = model_timesteps(self._sigma(timesteps), self.num_train_timesteps).to(x_t.dtype)
        return model(
            hidden_states=x_t,
            timestep=timestep,
            encoder_hidden_states=cond.hidden,
            pooled_projections=cond.added["pooled_projections"].to(x_t.dtype),
        ).sample


SD3_PARTS = ("transformer", "vae", "text_encoder", "text_encoder_2")
# T5 tokens per prompt: diffusers' SD3 training scripts' --max_sequence_length default. Generation
# uses the same, so that a fine-tuned model is sampled with the prompt length it was trained on.
T5_MAX_LENGTH = 77


def without_t5(model: ModelConfig) -> bool:
    """Whether SD3's third encoder is left out: ``model.t5 = false``, or a local folder without one."""
    path = Path(model.pretrained)
    return not model.t5 or (path.exists() and not (path / "text_encoder_3").is_dir())


def text_pipeline_kwargs(model: ModelConfig) -> dict:
    """What StableDiffusion3Pipeline.from_pretrained needs to leave T5 out (diffusers' own way)."""
    return {"text_encoder_3": None, "tokenizer_3": None} if without_t5(model) else {}


def check_sd3_source(source: str) -> None:
    path = Path(source)
    if path.exists():
        if not (path / "transformer" / "config.json").is_file():
            raise ConfigError(f"model.pretrained: {path} is not an SD3 pipeline folder (no transformer/config.json)")
        check_weights(path, SD3_PARTS)
        return
    if source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise ConfigError(f"model.pretrained: {source} does not exist (give a local diffusers folder or a hub id)")


class SD3Backend(FlowBackend):
    """SD3 / SD3.5: latents from the 16-channel VAE, ``(mean - shift_factor) * scaling_factor``
    (the VAE posterior's mean, as the SD1.5 backend: deterministic, so the latent cache is
    exact); text from ``StableDiffusion3Pipeline.encode_prompt`` itself: both CLIP encoders'
    penultimate states padded to the joint width, concatenated along the sequence with T5's
    (zeros when ``text_encoder_3`` is absent, as diffusers does), and the pooled projections."""

    kind = "sd3"
    summary = (
        "Stable Diffusion 3 / 3.5: an MMDiT transformer (rectified flow), 16-channel VAE, two CLIPs and optional T5"
    )
    default_guidance = 7.0  # the pipeline's default

    @classmethod
    def check_source(cls, model: ModelConfig) -> None:
        check_sd3_source(model.pretrained)

    @classmethod
    def encoder_fingerprint(cls, model: ModelConfig) -> dict[str, str]:
        # T5 left out: its zeros depend on no weights
        parts = ("text_encoder", "text_encoder_2") + (() if without_t5(model) else ("text_encoder_3",))
        return {"image_encoder": image_encoder_digest(model), "text_encoders": weights_digest(model.pretrained, parts)}

    @classmethod
    def sampler(cls, model: ModelConfig, final: Path | None, denoiser_path: Path | None = None):
        """With T5 as in training: present or not, the same prompt length."""
        return pipeline_sampler(
            cls,
            model,
            final,
            denoiser_path,
            pipeline_kwargs=text_pipeline_kwargs(model),
            call_kwargs={"max_sequence_length": T5_MAX_LENGTH},
        )

    @classmethod
    def build_tiny(cls, folder: str | Path, *, seed: int = 0, **options) -> Path:
        """``options``: ``build_tiny_sd3_pipeline``'s (sd35, t5, shift)."""
        from ...tiny import build_tiny_sd3_pipeline

        return build_tiny_sd3_pipeline(folder, seed=seed, **options)

    def __init__(
        self,
        model: ModelConfig,
        device: str = "cpu",
        *,
        denoiser: bool = True,
        encoders: bool = True,
        denoiser_device: str | None = None,
    ):
        from diffusers import (
            AutoencoderKL,
            FlowMatchEulerDiscreteScheduler,
            SD3Transformer2DModel,
            StableDiffusion3Pipeline,
        )

        self.source, self.device, self.resolution = model.pretrained, torch.device(device), model.resolution
        half = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(model.mixed_precision)
        self.dtype = half if (half is not None and self.device.type == "cuda") else torch.float32
        check_sd3_source(self.source)
        self.denoiser, self.vae, self.text_pipeline = None, None, None
        try:
            if denoiser:
                self.denoiser = SD3Transformer2DModel.from_pretrained(self.source, subfolder="transformer").to(
                    denoiser_device or self.device
                )
            self.noise_scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(self.source, subfolder="scheduler")
            if encoders:
                self.vae = AutoencoderKL.from_pretrained(
                    model.vae or self.source, **({} if model.vae else {"subfolder": "vae"})
                )
                # Only the pipeline's prompt encoding is used. It reads the transformer's config (the
                # joint width of T5's zeros when T5 is left out): without the trained transformer at
                # hand (building a latent cache), a weightless one on the meta device stands in.
                transformer = self.denoiser
                if transformer is None:
                    from accelerate import init_empty_weights

                    with init_empty_weights():
                        transformer = SD3Transformer2DModel.from_config(
                            SD3Transformer2DModel.load_config(self.source, subfolder="transformer")
                        )
                self.text_pipeline = StableDiffusion3Pipeline.from_pretrained(
                    self.source, transformer=transformer, vae=None, **text_pipeline_kwargs(model)
                )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"model.pretrained: cannot load {self.source}: {str(exc).splitlines()[0]}") from None
        self.vae_dtype = torch.float32 if model.vae_fp32 else self.dtype
        if self.vae is not None:
            self.vae.requires_grad_(False).eval().to(self.device, self.vae_dtype)
        if self.text_pipeline is not None:
            for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
                encoder = getattr(self.text_pipeline, name, None)
                if encoder is not None:
                    encoder.requires_grad_(False).eval().to(self.device, self.dtype)

    @torch.no_grad()
    def encode_images(self, images: np.ndarray) -> torch.Tensor:
        # NCHW in memory, as torchvision's ToTensor gives the official loop: the VAE's convolutions run
        # about 10% slower on the channels-last view a bare permute leaves.
        pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous().float() / 127.5 - 1.0
        mean = self.vae.encode(pixels.to(self.device, self.vae_dtype)).latent_dist.mean
        config = self.vae.config
        return ((mean - (config.shift_factor or 0.0)) * config.scaling_factor).float()

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> Conditioning:
        hidden, _, pooled, _ = self.text_pipeline.encode_prompt(
            prompt=list(captions),
            prompt_2=None,
            prompt_3=None,
            device=self.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
            max_sequence_length=T5_MAX_LENGTH,
        )
        return Conditioning(hidden.float(), {"pooled_projections": pooled.float()})

    def fresh_denoiser(self) -> torch.nn.Module:
        from diffusers import SD3Transformer2DModel

        return SD3Transformer2DModel.from_pretrained(self.source, subfolder="transformer").to(self.device)
