"""LAION aesthetic predictor v2 (Schuhmann 2022) as the ``laion-aesthetic`` metric.

Named ``laion-aesthetic`` because the toy world's oracle already registers ``aesthetic``.

Formula: score = MLP(e / ||e||), e = CLIP ViT-L/14 (OpenAI) projected image embedding (768-d),
MLP = Linear(768, 1024) - Dropout(0.2) - Linear(1024, 128) - Dropout(0.2) - Linear(128, 64)
- Dropout(0.1) - Linear(64, 16) - Linear(16, 1), without activations (the "linearMSE" model;
dropouts are inactive in eval mode), with the ``sac+logos+ava1-l14-linearMSE.pth`` weights
(state-dict keys ``layers.{0,2,4,6,7}.{weight,bias}``). The prompt is not used. SD1.5 scores
about 5.5-5.75 (paper Tables 3-4). The image embedding comes from transformers' CLIP
(``openai/clip-vit-large-patch14`` and its image processor), as in Diffusion-DPO's
``utils/aes_utils.py``; LAION's original used the ``clip`` package's identical ViT-L/14.

Sources (``laion-aesthetic=SOURCE``):
- default: the weights file from its home, ``christophschuhmann/improved-aesthetic-predictor``
  on GitHub, cached under ``$REFBENCH_CACHE`` (default ``~/.cache/refbench``); never
  downloaded when ``HF_HUB_OFFLINE`` is set;
- a local ``.pth`` file (the CLIP backbone then comes from ``openai/clip-vit-large-patch14``);
- a local folder holding the ``.pth`` file and, optionally, a ``clip/`` subfolder with a
  transformers ``CLIPModel`` (+ image processor) to use as the backbone;
- a hub repo ``owner/name[/file.pth]`` holding the weights file.

Tested offline: a tiny random-weight CLIP built from a config and an MLP state dict with the
real layer names, loaded through this code, the formula checked by hand. Not tested: the real
MLP and CLIP ViT-L/14 weights, never loaded (no model hub or GitHub downloads in development).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..metrics import MetricFn, MetricLoadError, register_loader, with_weights
from ._common import (
    batches,
    device,
    find_file,
    hub_file,
    local_path,
    looks_local,
    pooled,
    pretrained_weight_files,
    to_pil,
)

MLP_FILE = "sac+logos+ava1-l14-linearMSE.pth"
DEFAULT_SOURCE = f"https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/{MLP_FILE}"
CLIP_SOURCE = "openai/clip-vit-large-patch14"
HIDDEN = (1024, 128, 64, 16)
DROPOUTS = (0.2, 0.2, 0.1)


def build_mlp(input_size: int = 768):
    """The predictor's layer stack; indices match the published state-dict keys."""
    from torch import nn

    sizes = (input_size, *HIDDEN)
    layers: list[nn.Module] = []
    for i in range(len(HIDDEN)):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(DROPOUTS):
            layers.append(nn.Dropout(DROPOUTS[i]))
    layers.append(nn.Linear(HIDDEN[-1], 1))
    model = nn.Module()
    model.layers = nn.Sequential(*layers)  # attribute name gives the "layers." key prefix
    return model


def _download(url: str) -> Path:
    """Cached copy of ``url``; FileNotFoundError when offline and not cached."""
    import huggingface_hub.constants
    import torch

    cache = Path(os.environ.get("REFBENCH_CACHE", "~/.cache/refbench")).expanduser() / "aesthetic"
    path = cache / url.rsplit("/", 1)[-1]
    if not path.is_file():
        if huggingface_hub.constants.HF_HUB_OFFLINE:
            raise FileNotFoundError(f"{url}: offline and not in {cache}")
        cache.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=False)
    return path


def resolve(source: str) -> tuple[Path, str]:
    """(MLP weights file, CLIP backbone source) for a ``laion-aesthetic`` source."""
    if source.startswith(("https://", "http://")):
        return _download(source), CLIP_SOURCE
    if looks_local(source):
        path = local_path(source)
        if path.is_file():
            return path, CLIP_SOURCE
        clip = path / "clip"
        return find_file(path, (MLP_FILE,), ("*.pth",)), str(clip) if clip.is_dir() else CLIP_SOURCE
    parts = source.split("/")
    return Path(hub_file("/".join(parts[:2]), "/".join(parts[2:]) or MLP_FILE, source=source)), CLIP_SOURCE


def load(source: str) -> MetricFn:
    import torch
    from transformers import CLIPImageProcessor, CLIPModel

    mlp_file, clip_source = resolve(source)
    state = torch.load(mlp_file, map_location="cpu", weights_only=True)
    mlp = build_mlp(state["layers.0.weight"].shape[1])
    mlp.load_state_dict(state, strict=True)
    try:
        clip = CLIPModel.from_pretrained(clip_source).eval().requires_grad_(False).to(device())
        processor = CLIPImageProcessor.from_pretrained(clip_source)
    except OSError as exc:  # the MLP loaded; say which part is missing
        raise MetricLoadError(
            f"laion-aesthetic: cannot load the CLIP backbone {clip_source!r} (offline, or not found); "
            f"pass laion-aesthetic=/folder holding {MLP_FILE} and a clip/ CLIPModel folder"
        ) from exc
    mlp = mlp.eval().requires_grad_(False).to(device())
    dev = next(clip.parameters()).device

    def score(images: np.ndarray, prompts: list[str]) -> np.ndarray:
        out = np.empty(len(images), dtype=np.float64)
        with torch.no_grad():
            for sl in batches(len(images)):
                pix = processor(images=to_pil(images[sl]), return_tensors="pt")["pixel_values"].to(dev)
                emb = pooled(clip.get_image_features(pixel_values=pix)).float()
                emb = emb / emb.norm(dim=-1, keepdim=True)
                out[sl] = mlp.layers(emb).squeeze(-1).cpu().numpy()
        return out

    return with_weights(score, mlp_file, *pretrained_weight_files(clip_source))


register_loader(
    "laion-aesthetic",
    load,
    default_source=DEFAULT_SOURCE,
    description="LAION aesthetic v2: MLP on normalised CLIP ViT-L/14 image embedding (~5.6 for SD1.5)",
)
