"""The toy world's base text-to-image model: the same diffusers/transformers classes as SD1.5.

Components (saved diffusers-style, one subfolder each, fp32 safetensors):

- ``tokenizer``: a real ``CLIPTokenizer`` built offline. Its vocabulary is CLIP's byte
  level one (256 byte characters, each also with ``</w>``, plus the two specials) and
  BPE merges that turn every word of the toy grammar into one token. Any other text
  still tokenizes, byte by byte. One token per word keeps sequences short and lets a
  2-layer text encoder learn the grammar in minutes.
- ``text_encoder``: a small ``CLIPTextModel`` (trained jointly with the UNet).
- ``unet``: a ``UNet2DConditionModel`` in pixel space (16 px, 3 channels), 1.69 M
  parameters. Attention only at 8x8 and 4x4: with cross-attention at 16x16 (256
  tokens) instead, a training step took over twice as long (timed side by side).
- ``scheduler``: SD's ``DDPMScheduler`` (scaled_linear 0.00085 -> 0.012, 1000 steps,
  epsilon prediction). Sampling clips the predicted x0 to [-1, 1] (pixel space), and
  ``sampling.py`` recomputes eps from the clipped x0 so that guidance stays consistent.

Images as tensors are float in [-1, 1], shape (N, 3, H, W); as arrays uint8 (N, H, W, 3).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # heavy imports stay inside the functions that need them
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

BASE_CHECKPOINT: Path = Path(__file__).resolve().parent / "assets" / "base"

MODEL_MAX_LENGTH = 32  # toy prompts take 9 tokens; other text falls back to bytes
TEXT_HIDDEN = 64
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


@dataclass
class ToyComponents:
    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    unet: UNet2DConditionModel
    noise_scheduler: DDPMScheduler


# ----------------------------------------------------------------------------- tokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply ranked merges as CLIP's BPE does: lowest-ranked adjacent pair first."""
    symbols = list(symbols)
    while len(symbols) > 1:
        pairs = [(ranks.get(p, len(ranks)), i) for i, p in enumerate(zip(symbols, symbols[1:]))]
        rank, _ = min(pairs)
        if rank == len(ranks):
            break
        pair = next(p for p in zip(symbols, symbols[1:]) if ranks.get(p) == rank)
        out, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
                out.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                out.append(symbols[i])
                i += 1
        symbols = out
    return symbols


def toy_words() -> list[str]:
    """Every word of the toy grammar, sorted (the tokenizer's whole-word tokens)."""
    from .prompts import all_prompts

    return sorted({w for p in all_prompts() for w in p.text.split()})


def write_tokenizer_files(folder: Path, words: list[str] | None = None) -> None:
    """Write vocab.json, merges.txt and the tokenizer config for a byte-level CLIP BPE.

    Merges are added word by word, each appended after the existing ones and
    continuing from the segmentation those already produce, so adding a word never
    changes how earlier words split.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab_list = chars + [c + "</w>" for c in chars]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words if words is not None else toy_words():
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        symbols = _bpe(symbols, ranks)
        while len(symbols) > 1:
            pair = (symbols[0], symbols[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            vocab_list.append(pair[0] + pair[1])
            symbols = [pair[0] + pair[1]] + symbols[2:]
    vocab_list += [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def build_tokenizer(folder: Path) -> CLIPTokenizer:
    """Write the toy tokenizer files into ``folder`` and load them with from_pretrained.

    (transformers 5 ignores ``CLIPTokenizer(vocab_file=...)``; from_pretrained reads them.)
    """
    from transformers import CLIPTokenizer

    write_tokenizer_files(folder)
    tok = CLIPTokenizer.from_pretrained(str(folder))
    for word in toy_words():  # fail here, not in training, if a merge chain is broken
        ids = tok(word, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise RuntimeError(f"toy tokenizer splits {word!r} into {len(ids)} tokens")
    return tok


# ----------------------------------------------------------------------------- components


def text_encoder_config(tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=4 * TEXT_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=MODEL_MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def unet_config() -> dict:
    return dict(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=8,  # diffusers' name; it is the number of heads (8 heads x 8 dims at 64 ch)
        norm_num_groups=32,
    )


def scheduler_config() -> dict:
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=True,  # as in the committed checkpoint (without it: ~0.02 better oracle scores)
        clip_sample_range=1.0,
    )


def build_components(seed: int, tokenizer_dir: Path | None = None) -> ToyComponents:
    """Fresh random-weight components; the caller's global torch RNG is left untouched."""
    import tempfile

    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    if tokenizer_dir is None:
        with tempfile.TemporaryDirectory(prefix="refbench-tok-") as tmp:
            tokenizer = build_tokenizer(Path(tmp))
    else:
        tokenizer = build_tokenizer(Path(tokenizer_dir))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(text_encoder_config(tokenizer))
        unet = UNet2DConditionModel(**unet_config())
    return ToyComponents(tokenizer, text_encoder, unet, DDPMScheduler(**scheduler_config()))


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' per-file progress bars (noise for a 7 MB model), then restore."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def save_components(components: ToyComponents, folder: Path | str) -> Path:
    """Save as diffusers-style subfolders (fp32 safetensors); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    components.unet.save_pretrained(folder / "unet", safe_serialization=True)
    with _quiet_transformers():
        components.text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    components.noise_scheduler.save_pretrained(folder / "scheduler")
    tok_dir = folder / "tokenizer"
    components.tokenizer.save_pretrained(str(tok_dir))
    # Also keep the plain vocab.json / merges.txt pair, readable by any CLIP BPE tokenizer.
    if not (tok_dir / "merges.txt").exists():
        write_tokenizer_files(tok_dir)
    return folder


def load_components(folder: Path | str | None = None) -> ToyComponents:
    """Load components saved by ``save_components`` (None: the committed base checkpoint)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(folder) if folder is not None else BASE_CHECKPOINT
    if not (folder / "unet" / "config.json").exists():
        raise FileNotFoundError(f"no toy model at {folder} (expected unet/, text_encoder/, tokenizer/, scheduler/)")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    with _quiet_transformers():
        text_encoder = CLIPTextModel.from_pretrained(str(folder / "text_encoder"))
    unet = UNet2DConditionModel.from_pretrained(str(folder / "unet"))
    noise_scheduler = DDPMScheduler.from_pretrained(str(folder), subfolder="scheduler")
    text_encoder.eval()
    unet.eval()
    return ToyComponents(tokenizer, text_encoder, unet, noise_scheduler)


def tokenize(components: ToyComponents, texts: list[str]) -> torch.Tensor:
    """Token ids (N, MODEL_MAX_LENGTH), padded with <|endoftext|> as SD does."""
    tok = components.tokenizer
    return tok(
        list(texts), padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def encode_prompts(components: ToyComponents, texts: list[str]) -> torch.Tensor:
    """Text embeddings (N, L, D): the encoder's last hidden state, as SD1.5 uses.

    No torch.no_grad here: pretraining backpropagates through it; callers wrap it.
    """
    enc = components.text_encoder
    ids = tokenize(components, texts).to(enc.device)
    return enc(input_ids=ids).last_hidden_state


# ----------------------------------------------------------------------------- images


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) or (H, W, 3) -> float32 (N, 3, H, W) in [-1, 1]."""
    arr = np.asarray(images)
    if arr.dtype != np.uint8 or arr.shape[-1] != 3 or arr.ndim not in (3, 4):
        raise ValueError(f"expected uint8 (N, H, W, 3) images, got {arr.dtype} {arr.shape}")
    if arr.ndim == 3:
        arr = arr[None]
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float()
    return t / 127.5 - 1.0


def tensor_to_images(t: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3) (clamped, rounded)."""
    t = ((t.detach().float().cpu().clamp(-1.0, 1.0) + 1.0) * 127.5).round()
    return t.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
