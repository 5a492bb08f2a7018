"""What every backend provides, and the conditioning it hands to the denoiser."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...config import ModelConfig
from ...errors import ConfigError
from ...method.losses import per_sample_error

WEIGHT_SUFFIXES = (".safetensors", ".bin")


def check_weights(folder: Path, parts: tuple[str, ...]) -> None:
    """One ConfigError sentence if a model folder lacks a part or a part has no weight file."""
    for part in parts:
        sub = folder / part
        if not (sub / "config.json").is_file():
            raise ConfigError(
                f"model.pretrained: {folder} has no {part}/config.json; a diffusers model folder needs {', '.join(parts)}"
            )
        if not any(f.name.endswith(WEIGHT_SUFFIXES) for f in sub.iterdir()):
            raise ConfigError(
                f"model.pretrained: {folder} has no weights in {part}/ (expected a .safetensors or .bin file)"
            )


def weights_digest(source: str, subfolders: tuple[str, ...]) -> str:
    """sha256 (16 hex digits) of the weight files of ``subfolders`` of a local model folder, or of
    the hub id's snapshot already in the local hub cache; nothing is loaded or downloaded. A hub id
    that is not cached locally is named as such (its weights cannot be checked)."""
    folder = Path(source)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(source, local_files_only=True))
        except Exception:  # not in the local cache (or not a hub id): the name is all we can record
            return f"hub:{source}"
    digest = hashlib.sha256()
    for sub in subfolders:
        files = sorted(f for f in (folder / sub).glob("*") if f.name.endswith(WEIGHT_SUFFIXES))
        for file in files:
            digest.update(f"{sub}/{file.name}".encode())
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 24), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def image_encoder_digest(model: ModelConfig) -> str:
    """The latent cache's record of the VAE: model.vae's weights when given, else the pipeline's vae/."""
    return weights_digest(model.vae, ("",)) if model.vae else weights_digest(model.pretrained, ("vae",))


def pipeline_sampler(backend: type, model: ModelConfig, final: Path | None, denoiser_path: Path | None, **kwargs):
    """The diffusers pipeline sampler of a pipeline backend class (SD, SDXL, SD3); ``kwargs``: what differs."""
    from .samplers import PipelineSampler

    return PipelineSampler(
        diffusers_pipeline(backend.pipeline_name),
        model.pretrained,
        model.resolution,
        denoiser=backend.denoiser_folder,
        ddim=not backend.flow,
        final_folder=final,
        denoiser_path=denoiser_path,
        lora_rank=model.lora_rank,
        **kwargs,
    )


def diffusers_pipeline(name: str):
    """The diffusers pipeline class of that name (imported only when asked for)."""
    import diffusers

    return getattr(diffusers, name)


@dataclass
class Conditioning:
    """Per-sample denoiser conditioning: text hidden states, plus SDXL's or SD3's added kwargs."""

    hidden: torch.Tensor
    added: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.hidden.shape[0]

    def repeat(self, times: int) -> Conditioning:
        """The batch repeated ``times`` over, in order (winners' then losers' copy)."""
        return Conditioning(
            self.hidden.repeat(times, *[1] * (self.hidden.dim() - 1)),
            {k: v.repeat(times, *[1] * (v.dim() - 1)) for k, v in self.added.items()},
        )

    def select(self, index: slice | torch.Tensor) -> Conditioning:
        return Conditioning(self.hidden[index], {k: v[index] for k, v in self.added.items()})

    def to(self, device, dtype=None) -> Conditioning:
        return Conditioning(self.hidden.to(device, dtype), {k: v.to(device, dtype) for k, v in self.added.items()})


class Backend:
    """One model kind. The class declares what the kind is, read without loading anything (the
    registry, ``training.backends``, maps each kind to its class); an instance loads the frozen
    parts and the trainable ``denoiser`` (a UNet, or an SD3 transformer) with its
    ``noise_scheduler``. Subclasses implement the encoders."""

    kind: str
    summary: str  # one line for `refbench config --list`
    flow: bool = False  # rectified flow (velocity target, Euler sampling) instead of DDPM
    denoiser_folder: str = "unet"  # the denoiser's subfolder in a diffusers pipeline and in a run's final/
    pipeline_name: str = "StableDiffusionPipeline"  # the diffusers pipeline whose LoRA format (and sampler) it uses
    default_guidance: float  # `refbench generate`'s classifier-free guidance scale
    # `refbench generate` / `winrate`'s prompt set when --prompts is not given: for real models a
    # set that is still public (PartiPrompts; Pick-a-Pic v2's test split is off the hub)
    default_prompts: str = "partiprompts"
    analysis_pairs: int = 5000  # `refbench timestep-analysis`'s validation pairs (the paper used 5,000)
    full_size: dict | None = None  # `refbench bench --full-size`: the released model's configurations
    lora_targets: tuple[str, ...] = ("to_k", "to_q", "to_v", "to_out.0")  # modelset.UNET_LORA_TARGETS
    denoiser: torch.nn.Module
    noise_scheduler: object
    device: torch.device
    dtype: torch.dtype = torch.float32  # of frozen parts and inputs

    # -- the kind, without loading it --------------------------------------------------------
    @classmethod
    def check_source(cls, model: ModelConfig) -> None:
        """Fail before any data is read if the model cannot be found (one ConfigError line)."""
        raise NotImplementedError

    @classmethod
    def encoder_fingerprint(cls, model: ModelConfig) -> dict[str, str]:
        """The latent cache's record of the frozen encoders (``image_encoder``, ``text_encoders``):
        what the cached latents and text states depend on."""
        raise NotImplementedError

    @classmethod
    def sampler(cls, model: ModelConfig, final: Path | None, denoiser_path: Path | None = None):
        """The image sampler of the model, with a run's fine-tuned denoiser from ``final``, or the
        denoiser saved in ``denoiser_path`` (a diffusers folder: config.json and weights)."""
        raise NotImplementedError

    @classmethod
    def save_lora(cls, layers: dict[str, torch.Tensor], folder: Path) -> None:
        """The policy's LoRA layers (PEFT keys) as diffusers-format weights, for ``pipe.load_lora_weights``."""
        from diffusers.utils import convert_state_dict_to_diffusers

        diffusers_pipeline(cls.pipeline_name).save_lora_weights(
            str(folder), unet_lora_layers=convert_state_dict_to_diffusers(layers), safe_serialization=True
        )

    @classmethod
    def build_tiny(cls, folder: str | Path, *, seed: int = 0, **options) -> Path:
        """A tiny random-weight model of this kind in ``folder`` (tests and benchmarks; ``refbench.tiny``)."""
        raise NotImplementedError(f"no tiny build for {cls.kind}")

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
        """What the denoiser is trained to predict: eps, or v for v-prediction models."""
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

    def fresh_denoiser(self) -> torch.nn.Module:
        """A new copy of the initial denoiser, loaded from its source (for the initial model)."""
        raise NotImplementedError

    # -- the denoiser call -------------------------------------------------------------
    def predict(
        self, denoiser: torch.nn.Module, x_t: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning
    ) -> torch.Tensor:
        kwargs = {"added_cond_kwargs": cond.added} if cond.added else {}
        return denoiser(x_t, timesteps, encoder_hidden_states=cond.hidden, **kwargs).sample

    def errors(self, denoiser, x_t, timesteps, cond, target) -> torch.Tensor:
        """Per-sample denoising error of ``denoiser`` on the given noisy inputs."""
        return per_sample_error(self.predict(denoiser, x_t, timesteps, cond), target)
