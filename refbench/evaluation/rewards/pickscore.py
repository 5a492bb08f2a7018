"""PickScore (Kirstain et al. 2023) as the ``pickscore`` metric.

Formula (as the PickScore README computes it, before its softmax over candidates):
    score = logit_scale.exp() * cos(image_emb, text_emb)
with ``image_emb = CLIPModel.get_image_features``, ``text_emb = get_text_features``
(projected features) of the PickScore CLIP-H model. Its logit_scale.exp() is about 100,
so SD1.5 scores about 21-22, the scale of the paper's Tables 3-4 (21.36 for Diffusion-DPO).

Weights: transformers ``CLIPModel`` from ``yuvalkirstain/PickScore_v1`` (default) or a local
folder (``pickscore=/path``; a ``save_pretrained`` folder). Preprocessing and tokenisation:
the ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` ``CLIPProcessor`` (resize the short side to 224,
centre crop, CLIP mean/std; text padded and truncated at 77 tokens), or the processor saved
in the local folder if it holds a ``(pre)processor_config.json``.

Tested offline: a tiny random-weight ``CLIPModel`` built from a config, saved to a temporary
folder and loaded through this code, the formula checked against embeddings computed by hand.
Not tested: the real PickScore_v1 weights, never loaded (no model hub in development).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..metrics import MetricFn, MetricLoadError, register_loader, with_weights
from ._common import batches, cosine, device, hub_file, local_path, looks_local, pooled, pretrained_weight_files, to_pil

DEFAULT_SOURCE = "yuvalkirstain/PickScore_v1"
PROCESSOR_SOURCE = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
MAX_LENGTH = 77


def processor_source(source: str) -> str:
    """The model folder's own processor if it has one, else PickScore's published processor."""
    # transformers 4 saves preprocessor_config.json, transformers 5 processor_config.json
    names = ("preprocessor_config.json", "processor_config.json")
    if looks_local(source) and any((local_path(source) / n).is_file() for n in names):
        return str(Path(source).expanduser())
    return PROCESSOR_SOURCE


def load(source: str) -> MetricFn:
    import torch
    from transformers import CLIPModel, CLIPProcessor

    if looks_local(source):
        local_path(source)  # a missing folder is "not found", not a malformed hub id
    else:  # tried as a hub id: not there says so in one line, naming both tries
        hub_file(source, "config.json", source=source)
    model = CLIPModel.from_pretrained(source).eval().requires_grad_(False).to(device())
    try:
        processor = CLIPProcessor.from_pretrained(processor_source(source))
    except OSError as exc:  # the model loaded; say which part is missing
        raise MetricLoadError(
            f"pickscore: cannot load the processor {PROCESSOR_SOURCE!r} (offline, or not found); "
            f"save a CLIPProcessor into the model folder"
        ) from exc
    dev = next(model.parameters()).device

    def score(images: np.ndarray, prompts: list[str]) -> np.ndarray:
        out = np.empty(len(images), dtype=np.float64)
        with torch.no_grad():
            scale = model.logit_scale.exp().float()
            for sl in batches(len(images)):
                pix = processor(images=to_pil(images[sl]), return_tensors="pt")["pixel_values"].to(dev)
                txt = processor(
                    text=prompts[sl], padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
                ).to(dev)
                img_emb = pooled(model.get_image_features(pixel_values=pix)).float()
                txt_emb = pooled(
                    model.get_text_features(input_ids=txt["input_ids"], attention_mask=txt["attention_mask"])
                ).float()
                out[sl] = (scale * cosine(img_emb, txt_emb)).cpu().numpy()
        return out

    return with_weights(score, *pretrained_weight_files(source))


register_loader(
    "pickscore",
    load,
    default_source=DEFAULT_SOURCE,
    description="PickScore: logit_scale.exp() * cos(CLIP-H image, text) (~21-22 for SD1.5)",
)
