"""CLIP score as the ``clip`` metric.

Formula: score = 100 * cos(image_emb, text_emb) with open_clip ``ViT-H-14`` trained on
LAION-2B (``laion2b_s32b_b79k``), open_clip's tokenizer and the model's standard
preprocessing (short side to 224, centre crop, CLIP mean/std). This is the model
Diffusion-DPO's ``utils/clip_utils.py`` scores with (it returns the raw cosine); the paper
reports 100 * cosine (Table 3: 33.84 for Diffusion-DPO). Unlike torchmetrics' CLIPScore,
negative cosines are not clipped to 0 (they do not occur for matching prompts, and
clipping would create ties in win rates).

Weights: ``open_clip_pytorch_model.bin`` from hub repo ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``
(default; the file open_clip's ``laion2b_s32b_b79k`` tag downloads), or a local file or
folder (``clip=/path``; folder: ``open_clip_model.safetensors`` or
``open_clip_pytorch_model.bin``), or ``owner/name/file`` on the hub. See ``_openclip.py``.

Tested offline: a tiny random-weight open_clip model built from a config, loaded through this
code, the formula checked. Not tested: the real ViT-H-14 weights, never loaded (no model hub in
development).
"""

from __future__ import annotations

import numpy as np

from ..metrics import MetricFn, register_loader, with_weights
from ._openclip import cosine_scores, load_open_clip

DEFAULT_SOURCE = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
ARCH = "ViT-H-14"
CHECKPOINTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
SCALE = 100.0


def load(source: str) -> MetricFn:
    m = load_open_clip(source, default_arch=ARCH, hub_filename=CHECKPOINTS[1], local_names=CHECKPOINTS)

    def score(images: np.ndarray, prompts: list[str]) -> np.ndarray:
        return SCALE * cosine_scores(m, images, prompts)

    return with_weights(score, m.checkpoint)


register_loader(
    "clip",
    load,
    default_source=DEFAULT_SOURCE,
    description="CLIP score: 100 * cos(open_clip ViT-H-14 laion2b image, text) (~34 for SD1.5)",
)
