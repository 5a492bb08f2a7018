"""The flow-matching toy world's base model: diffusers' SD3 classes in pixel space.

Components (saved diffusers-style, one subfolder each, fp32 safetensors):

- ``tokenizer`` and ``text_encoder``: the UNet toy world's, copied and frozen. SD3 keeps its
  CLIP and T5 encoders frozen too; reusing the toy's trained encoder means the flow model
  learns only the image side, so both worlds read prompts identically.
- ``transformer``: an ``SD3Transformer2DModel`` (the MMDiT of SD3) on 16 px, 3-channel
  pixels, patch 2 (64 image tokens), 6 joint blocks of 3 heads x 32 dims; 1.96 M parameters,
  7.9 MB. Text tokens: the encoder's last hidden state (the joint stream); pooled: its pooled
  output (the timestep embedding's addend, where SD3 puts CLIP's pooled projections).
- ``scheduler``: ``FlowMatchEulerDiscreteScheduler``, 1000 steps, shift 1. SD3 uses shift 3
  at 1024 px because more pixels keep more signal at a given noise level (Esser et al. 2024,
  Sec. 5.3.2); at 16 px there is nothing to compensate.

Rectified flow reaches pure noise at s = 1, so unlike the UNet world no offset noise is
needed for the image mean to carry no signal at the start of sampling.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .model import BASE_CHECKPOINT, TEXT_HIDDEN, _quiet_transformers, tokenize

if TYPE_CHECKING:
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextModel, CLIPTokenizer

FLOW_CHECKPOINT: Path = Path(__file__).resolve().parent / "assets" / "flow"


@dataclass
class ToyFlowComponents:
    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    transformer: SD3Transformer2DModel
    noise_scheduler: FlowMatchEulerDiscreteScheduler

    @property
    def unet(self) -> SD3Transformer2DModel:  # the trainable denoiser, under the name the trainer uses
        return self.transformer


def transformer_config() -> dict:
    return dict(
        sample_size=16,
        patch_size=2,
        in_channels=3,
        out_channels=3,
        num_layers=6,
        attention_head_dim=32,
        num_attention_heads=3,
        joint_attention_dim=TEXT_HIDDEN,
        caption_projection_dim=96,
        pooled_projection_dim=TEXT_HIDDEN,
        pos_embed_max_size=8,
    )


def scheduler_config() -> dict:
    return dict(num_train_timesteps=1000, shift=1.0)


def build_flow_components(seed: int, text_from: Path | None = None) -> ToyFlowComponents:
    """A random-weight transformer with the UNet toy world's frozen tokenizer and text encoder
    (``text_from``: a toy model folder; None: the committed base). The global RNG is untouched."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextModel, CLIPTokenizer

    text_from = Path(text_from) if text_from is not None else BASE_CHECKPOINT
    tokenizer = CLIPTokenizer.from_pretrained(str(text_from / "tokenizer"))
    with _quiet_transformers():
        text_encoder = CLIPTextModel.from_pretrained(str(text_from / "text_encoder"))
    text_encoder.requires_grad_(False).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = SD3Transformer2DModel(**transformer_config())
    return ToyFlowComponents(
        tokenizer, text_encoder, transformer, FlowMatchEulerDiscreteScheduler(**scheduler_config())
    )


def save_flow_components(components: ToyFlowComponents, folder: Path | str, text_from: Path | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    components.transformer.save_pretrained(folder / "transformer", safe_serialization=True)
    components.noise_scheduler.save_pretrained(folder / "scheduler")
    text_from = Path(text_from) if text_from is not None else BASE_CHECKPOINT
    for part in ("text_encoder", "tokenizer"):  # byte-identical copies of the frozen parts
        shutil.rmtree(folder / part, ignore_errors=True)
        shutil.copytree(text_from / part, folder / part)
    return folder


def load_flow_components(folder: Path | str | None = None) -> ToyFlowComponents:
    """Load components saved by ``save_flow_components`` (None: the committed flow checkpoint)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(folder) if folder is not None else FLOW_CHECKPOINT
    if not (folder / "transformer" / "config.json").exists():
        raise FileNotFoundError(
            f"no flow toy model at {folder} (expected transformer/, text_encoder/, tokenizer/, scheduler/)"
        )
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    with _quiet_transformers():
        text_encoder = CLIPTextModel.from_pretrained(str(folder / "text_encoder"))
    transformer = SD3Transformer2DModel.from_pretrained(str(folder / "transformer"))
    noise_scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(str(folder), subfolder="scheduler")
    text_encoder.requires_grad_(False).eval()
    transformer.eval()
    return ToyFlowComponents(tokenizer, text_encoder, transformer, noise_scheduler)


def encode_flow_prompts(components: ToyFlowComponents, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden states (N, L, D), pooled (N, D)) of the frozen text encoder."""
    encoder = components.text_encoder
    ids = tokenize(components, texts).to(encoder.device)
    with torch.no_grad():
        output = encoder(input_ids=ids)
    return output.last_hidden_state, output.pooler_output
