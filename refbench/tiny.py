"""Tiny random-weight SD1.5-, SDXL- and SD3-style pipelines, built from configs, for tests and benchmarks.

Same classes as the real models (UNet2DConditionModel or SD3Transformer2DModel, AutoencoderKL,
CLIP text encoders, optionally T5, CLIPTokenizer, DDPMScheduler or
FlowMatchEulerDiscreteScheduler), saved as a diffusers pipeline folder and loaded back through
the very code that loads Stable Diffusion. Nothing is downloaded. A kind's backend class builds
its tiny model with these (``Backend.build_tiny``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TEXT_HIDDEN = 32


def _text_config(vocab_size: int, tokenizer, projection: bool):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        projection_dim=TEXT_HIDDEN if projection else 512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny_pipeline(folder: str | Path, *, sdxl: bool = False, seed: int = 0, norm_groups: int = 32) -> Path:
    """Write a tiny SD1.5-style pipeline (``sdxl``: SDXL-style) into ``folder``; images 16 px -> latents 8 x 8.

    ``norm_groups``: the UNet's GroupNorm groups. With the default 32, the first block's 32 channels
    are normalised one by one, so a per-channel shift (its conv1 bias, its time-embedding projection)
    has an exact gradient of zero, and AdamW turns that gradient's rounding noise into steps of +-lr:
    tests that compare two computations of one update use 8 (four channels a group; SD1.5 has ten)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from .toy.model import write_tokenizer_files

    folder = Path(folder)
    tokenizer_names = ["tokenizer", "tokenizer_2"] if sdxl else ["tokenizer"]
    for name in tokenizer_names:
        write_tokenizer_files(folder / name, words=[])  # byte-level CLIP BPE, offline
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    extra = {}
    if sdxl:
        extra = dict(
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + TEXT_HIDDEN,
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=TEXT_HIDDEN * (2 if sdxl else 1),
            attention_head_dim=8,
            norm_num_groups=norm_groups,
            **extra,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            block_out_channels=(32, 32),
            latent_channels=4,
            norm_num_groups=32,
            sample_size=16,
        )
        encoders = {"text_encoder": CLIPTextModel(_text_config(len(tokenizer), tokenizer, False))}
        if sdxl:
            encoders["text_encoder_2"] = CLIPTextModelWithProjection(_text_config(len(tokenizer), tokenizer, True))
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
    )
    unet.save_pretrained(str(folder / "unet"))
    vae.save_pretrained(str(folder / "vae"))
    scheduler.save_pretrained(str(folder / "scheduler"))
    for name, encoder in encoders.items():
        encoder.save_pretrained(str(folder / name))
    write_pipeline_index(folder, sdxl)
    return folder


def write_pipeline_index(folder: Path, sdxl: bool) -> None:
    """The pipeline's model_index.json, so that diffusers' pipelines load the folder."""
    index = {
        "_class_name": "StableDiffusionXLPipeline" if sdxl else "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
    }
    if sdxl:
        index.update(
            text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
            tokenizer_2=["transformers", "CLIPTokenizer"],
            force_zeros_for_empty_prompt=True,
        )
    else:
        index.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
    (Path(folder) / "model_index.json").write_text(json.dumps(index, indent=2))


def build_tiny_sd3_pipeline(
    folder: str | Path, *, sd35: bool = False, t5: bool = False, seed: int = 0, shift: float = 3.0
) -> Path:
    """Write a tiny SD3 (``sd35``: SD3.5's dual attention and RMS q/k norm) pipeline; 16 px images,
    8 x 8 x 16 latents, SD3's VAE shift and scaling factors, the scheduler's ``shift``. Without
    ``t5`` there is no third encoder (``text_encoder_3 = None``, as diffusers allows)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    from .toy.model import write_tokenizer_files

    folder = Path(folder)
    for name in ("tokenizer", "tokenizer_2"):
        write_tokenizer_files(folder / name, words=[])
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    joint = 2 * TEXT_HIDDEN  # the CLIP states are concatenated, then padded to the joint width
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = SD3Transformer2DModel(
            sample_size=8,
            patch_size=2,
            in_channels=16,
            out_channels=16,
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=2,
            joint_attention_dim=joint,
            caption_projection_dim=16,
            pooled_projection_dim=2 * TEXT_HIDDEN,
            pos_embed_max_size=8,
            **({"dual_attention_layers": (0,), "qk_norm": "rms_norm"} if sd35 else {}),
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            block_out_channels=(32, 32),
            latent_channels=16,
            norm_num_groups=32,
            sample_size=16,
            shift_factor=0.0609,
            scaling_factor=1.5305,
            use_quant_conv=False,
            use_post_quant_conv=False,
        )
        encoders = {
            name: CLIPTextModelWithProjection(_text_config(len(tokenizer), tokenizer, True))
            for name in ("text_encoder", "text_encoder_2")
        }
        if t5:
            encoders["text_encoder_3"] = _tiny_t5(folder / "tokenizer_3", joint)
    transformer.save_pretrained(str(folder / "transformer"))
    vae.save_pretrained(str(folder / "vae"))
    FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift).save_pretrained(str(folder / "scheduler"))
    for name, encoder in encoders.items():
        encoder.save_pretrained(str(folder / name))
    index = {
        "_class_name": "StableDiffusion3Pipeline",
        "transformer": ["diffusers", "SD3Transformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "text_encoder_3": ["transformers", "T5EncoderModel"] if t5 else [None, None],
        "tokenizer_3": ["transformers", "T5TokenizerFast"] if t5 else [None, None],
        "image_encoder": [None, None],
        "feature_extractor": [None, None],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def _tiny_t5(tokenizer_folder: Path, width: int):
    """A 2-layer T5 encoder and a T5 (Unigram) tokenizer built offline from a small vocabulary: the
    specials, the letters and a few words as SentencePiece pieces ("\u2581" marks a word start)."""
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    pieces = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [
        "\u2581" + chr(c) for c in range(ord("a"), ord("z") + 1)
    ]
    pieces += [
        "\u2581" + w for w in ("a", "the", "of", "and", "red", "blue", "green", "cat", "dog", "circle", "square")
    ]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)] + [
        (p, -1.0 - len(p) ** -1) for p in dict.fromkeys(pieces)
    ]
    tokenizer = T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=32)
    tokenizer.save_pretrained(str(tokenizer_folder))
    config = T5Config(
        vocab_size=len(vocab),
        d_model=width,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config)
