"""Image samplers for `refbench generate`: the toy models, and SD1.5 / SDXL / SD3 diffusers pipelines.

All draw each image's initial noise from (prompt, seed) alone (``toy.sampling.initial_noise``),
so two models are compared on identical noise. The DDPM models use DDIM with classifier-free
guidance (official settings: 7.5 for SD1.5, 5 for SDXL, 50 steps; the toy's default 3); the
flow models their own Euler sampler (``FlowMatchEulerDiscreteScheduler``), with guidance 7 for
SD3 (the pipeline's default) and 3 for the flow toy world, as for the UNet toy world. Each
backend class's ``sampler`` and ``default_guidance`` say which sampler and scale its kind uses.

They live beside the backends, not in ``evaluation``: which sampler draws a kind's images is
part of what the kind is, and the registry that maps kinds to backends is in ``training``,
which must not import ``evaluation`` (evaluation imports training, as the layout's imports
point down).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...toy.sampling import DEFAULT_STEPS

__all__ = ["ToySampler", "ToyFlowSampler", "PipelineSampler", "DEFAULT_STEPS"]


class ToySampler:
    """The toy model (``model_folder``), optionally with a fine-tuned UNet (``denoiser_folder``) from a run."""

    name = "toy DDIMScheduler"  # recorded with every sample (the evaluation protocol)

    def __init__(self, model_folder: Path, denoiser_folder: Path | None = None):
        from ...toy.model import load_components

        self.components = load_components(model_folder)
        self.denoiser = None
        if denoiser_folder is not None:
            from diffusers import UNet2DConditionModel

            self.denoiser = UNet2DConditionModel.from_pretrained(str(denoiser_folder)).eval()

    def __call__(self, prompts: list[str], seeds: list[int], *, guidance_scale: float, steps: int) -> np.ndarray:
        from ...toy.sampling import sample_images

        return sample_images(
            self.components,
            prompts,
            seeds,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            unet=self.denoiser,
        )


class ToyFlowSampler:
    """The flow toy model (``model_folder``), optionally with a fine-tuned transformer (``denoiser_folder``) from a run."""

    name = "toy FlowMatchEulerDiscreteScheduler"

    def __init__(self, model_folder: Path, denoiser_folder: Path | None = None):
        from ...toy.flow_model import load_flow_components

        self.components = load_flow_components(model_folder)
        self.denoiser = None
        if denoiser_folder is not None:
            from diffusers import SD3Transformer2DModel

            self.denoiser = SD3Transformer2DModel.from_pretrained(str(denoiser_folder)).eval()

    def __call__(self, prompts: list[str], seeds: list[int], *, guidance_scale: float, steps: int) -> np.ndarray:
        from ...toy.sampling import sample_flow_images

        return sample_flow_images(
            self.components,
            prompts,
            seeds,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            transformer=self.denoiser,
        )


class PipelineSampler:
    """A diffusers SD1.5 / SDXL / SD3 pipeline (``pipeline_class``) with a run's denoiser (full: the
    ``denoiser`` subfolder of ``final_folder``, "unet" or "transformer") or its policy LoRA adapter,
    or with the denoiser saved in ``denoiser_path`` (e.g. a released Diffusion-DPO UNet).
    ``ddim``: sample with DDIM (the DDPM models); else the pipeline keeps its own scheduler (SD3:
    flow matching, Euler)."""

    def __init__(
        self,
        pipeline_class,
        source: str,
        resolution: int,
        *,
        denoiser: str,
        ddim: bool,
        final_folder: Path | None = None,
        denoiser_path: Path | None = None,
        lora_rank: int = 0,
        device: str = "cpu",
        pipeline_kwargs: dict | None = None,
        call_kwargs: dict | None = None,
    ):
        from diffusers import DDIMScheduler

        self.pipe = pipeline_class.from_pretrained(source, **(pipeline_kwargs or {}))
        self.extra = dict(call_kwargs or {})
        if denoiser_path is not None:  # loaded as diffusers loads the pipeline's own
            setattr(self.pipe, denoiser, _matching_denoiser(getattr(self.pipe, denoiser), denoiser_path))
        if final_folder is not None and lora_rank == 0:  # the pipeline's own class for its denoiser
            trained = type(getattr(self.pipe, denoiser)).from_pretrained(str(final_folder / denoiser))
            setattr(self.pipe, denoiser, trained)
        elif final_folder is not None:  # as a user would: diffusers' own LoRA loading
            self.pipe.load_lora_weights(str(final_folder))
            if not self.pipe.get_list_adapters():  # diffusers loads nothing, silently, from a wrong folder
                raise RuntimeError(f"no LoRA weights were loaded from {final_folder}")
        if ddim:
            self.pipe.scheduler = DDIMScheduler.from_config(self.pipe.scheduler.config)
        self.name = f"{pipeline_class.__name__} {type(self.pipe.scheduler).__name__}"  # recorded with every sample
        self.pipe.set_progress_bar_config(disable=True)
        self.pipe.to(device)
        self.resolution = resolution
        self.denoiser = getattr(self.pipe, denoiser)
        self.latent_shape = (
            self.denoiser.config.in_channels,
            resolution // self.pipe.vae_scale_factor,
            resolution // self.pipe.vae_scale_factor,
        )

    @torch.no_grad()
    def __call__(self, prompts: list[str], seeds: list[int], *, guidance_scale: float, steps: int) -> np.ndarray:
        from ...toy.sampling import initial_noise

        latents = torch.stack([initial_noise(p, s, self.latent_shape) for p, s in zip(prompts, seeds)])
        output = self.pipe(
            list(prompts),
            latents=latents.to(self.pipe.device, self.denoiser.dtype),
            guidance_scale=guidance_scale,
            num_inference_steps=steps,
            height=self.resolution,
            width=self.resolution,
            output_type="np",
            **self.extra,
        )
        return (np.clip(output.images, 0, 1) * 255).round().astype(np.uint8)


def _matching_denoiser(current, folder: Path):
    """The denoiser in ``folder``, of the pipeline's denoiser class; refused in one line when it
    cannot replace ``current`` (another latent width or text-embedding width: another model family)."""
    replacement = type(current).from_pretrained(str(folder))
    for key in ("in_channels", "out_channels", "cross_attention_dim", "joint_attention_dim"):
        want, got = current.config.get(key), replacement.config.get(key)
        if want != got:
            raise ValueError(
                f"the denoiser in {folder} does not fit this pipeline ({key} {got}, the pipeline's {want})"
            )
    return replacement
