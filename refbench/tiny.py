"""Tiny random-weight SD1.5- and SDXL-style pipelines, built from configs, for tests and benchmarks.

Same classes as the real models (UNet2DConditionModel, AutoencoderKL, CLIP text encoders,
CLIPTokenizer, DDPMScheduler), saved as a diffusers pipeline folder and loaded back
through the very code that loads Stable Diffusion. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TEXT_HIDDEN = 32


def _text_config(vocab_size: int, tokenizer, projection: bool):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=TEXT_HIDDEN, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length,
                          projection_dim=TEXT_HIDDEN if projection else 512, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def build_tiny_pipeline(folder: str | Path, kind: str = "sd15", seed: int = 0) -> Path:
    """Write a tiny ``kind`` ('sd15' or 'sdxl') pipeline into ``folder``; images 16 px -> latents 8 x 8."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from .toy.model import write_tokenizer_files

    if kind not in ("sd15", "sdxl"):
        raise ValueError(f"kind must be sd15 or sdxl, got {kind!r}")
    folder = Path(folder)
    sdxl = kind == "sdxl"
    tokenizer_names = ["tokenizer", "tokenizer_2"] if sdxl else ["tokenizer"]
    for name in tokenizer_names:
        write_tokenizer_files(folder / name, words=[])  # byte-level CLIP BPE, offline
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    extra = {}
    if sdxl:
        extra = dict(addition_embed_type="text_time", addition_time_embed_dim=8,
                     projection_class_embeddings_input_dim=6 * 8 + TEXT_HIDDEN)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=TEXT_HIDDEN * (2 if sdxl else 1), attention_head_dim=8, norm_num_groups=32, **extra)
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 32), latent_channels=4,
                            norm_num_groups=32, sample_size=16)
        encoders = {"text_encoder": CLIPTextModel(_text_config(len(tokenizer), tokenizer, False))}
        if sdxl:
            encoders["text_encoder_2"] = CLIPTextModelWithProjection(_text_config(len(tokenizer), tokenizer, True))
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", prediction_type="epsilon", clip_sample=False)
    unet.save_pretrained(str(folder / "unet"))
    vae.save_pretrained(str(folder / "vae"))
    scheduler.save_pretrained(str(folder / "scheduler"))
    for name, encoder in encoders.items():
        encoder.save_pretrained(str(folder / name))
    write_pipeline_index(folder, sdxl)
    return folder


def write_pipeline_index(folder: Path, sdxl: bool) -> None:
    """The pipeline's model_index.json, so that diffusers' pipelines load the folder."""
    index = {"_class_name": "StableDiffusionXLPipeline" if sdxl else "StableDiffusionPipeline",
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "scheduler": ["diffusers", "DDPMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"]}
    if sdxl:
        index.update(text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
                     tokenizer_2=["transformers", "CLIPTokenizer"], force_zeros_for_empty_prompt=True)
    else:
        index.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
    (Path(folder) / "model_index.json").write_text(json.dumps(index, indent=2))
