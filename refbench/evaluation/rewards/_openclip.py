"""Loading an open_clip model from a checkpoint file (shared by ``hpsv2`` and ``clip``).

Source forms (``name=SOURCE``):
- a local checkpoint file (``.pt``/``.pth``/``.bin``/``.safetensors``; a ``{"state_dict": ...}``
  wrapper and ``module.`` prefixes are accepted, as in open_clip's own loader);
- a local folder holding one of the model's known checkpoint names;
- a hub repo ``owner/name`` (the model's default file) or ``owner/name/path/in/repo``.
The architecture is the model's default built-in open_clip config (``ViT-H-14``), unless an
``open_clip_config.json`` (open_clip's hub format, ``{"model_cfg": ..., "preprocess_cfg": ...}``)
sits beside a local checkpoint: then that config is used. This is how the tests load tiny
random-weight models through exactly this code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._common import device, find_file, hub_file, local_path, looks_local

CONFIG_NAME = "open_clip_config.json"


@dataclass
class OpenClipModel:
    model: Any  # open_clip CLIP, eval mode, on ``device()``
    tokenizer: Any  # open_clip tokenizer: list[str] -> LongTensor (N, context_length)
    preprocess: Any  # PIL image -> normalised tensor (3, S, S)
    checkpoint: str


def resolve_checkpoint(
    source: str,
    *,
    hub_filename: str,
    local_names: tuple[str, ...],
    patterns: tuple[str, ...] = ("*.pt", "*.pth", "*.bin", "*.safetensors"),
) -> tuple[Path, bool]:
    """(checkpoint path, is local). Hub downloads go through the cache (offline-safe)."""
    if looks_local(source):
        path = local_path(source)
        return (find_file(path, local_names, patterns) if path.is_dir() else path), True
    parts = source.split("/")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:]) or hub_filename
    return Path(hub_file(repo, filename, source=source)), False


def load_open_clip(
    source: str, *, default_arch: str, hub_filename: str, local_names: tuple[str, ...], resize_mode: str | None = None
) -> OpenClipModel:
    """Build the architecture with open_clip, then load the checkpoint strictly."""
    import open_clip

    ckpt, local = resolve_checkpoint(source, hub_filename=hub_filename, local_names=local_names)
    arch = f"local-dir:{ckpt.parent}" if local and (ckpt.parent / CONFIG_NAME).is_file() else default_arch
    # load_weights=False: only the architecture (and its preprocessing config); weights below.
    # Mute open_clip's "initialized randomly" warning: the checkpoint is loaded next.
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.WARNING))
    try:
        model = open_clip.create_model(arch, pretrained=None, load_weights=False, device="cpu")
    finally:
        logging.disable(previous)
    # strict: a checkpoint of another architecture fails here instead of scoring garbage
    open_clip.load_checkpoint(model, str(ckpt), strict=True, weights_only=True)
    model = model.eval().requires_grad_(False).to(device())
    cfg = dict(open_clip.get_model_preprocess_cfg(model))
    preprocess = open_clip.image_transform(
        cfg.get("size", 224),
        is_train=False,
        mean=cfg.get("mean"),
        std=cfg.get("std"),
        resize_mode=resize_mode or cfg.get("resize_mode"),
        interpolation=cfg.get("interpolation"),
        fill_color=cfg.get("fill_color", 0),
    )
    tokenizer = open_clip.get_tokenizer(arch)
    return OpenClipModel(model, tokenizer, preprocess, str(ckpt))


def cosine_scores(m: OpenClipModel, images, prompts: list[str]):
    """cos(image_emb, text_emb) per (image, prompt) pair, batched; float64 numpy (N,)."""
    import numpy as np
    import torch

    from ._common import batches, cosine, to_pil

    out = np.empty(len(images), dtype=np.float64)
    dev = next(m.model.parameters()).device
    with torch.no_grad():
        for sl in batches(len(images)):
            pix = torch.stack([m.preprocess(im) for im in to_pil(images[sl])]).to(dev)
            tok = m.tokenizer(prompts[sl]).to(dev)
            img = m.model.encode_image(pix).float()
            txt = m.model.encode_text(tok).float()
            out[sl] = cosine(img, txt).cpu().numpy()
    return out
