"""HPSv2 (Wu et al. 2023) as the ``hpsv2`` metric.

Formula: score = 100 * cos(image_emb, text_emb), with open_clip ``ViT-H-14`` (the
architecture HPSv2 fine-tunes) carrying the HPSv2 checkpoint, open_clip's ``ViT-H-14``
tokenizer (the same BPE vocabulary HPSv2 ships) and HPSv2's evaluation preprocessing:
resize the *longest* side to 224 and pad to a square (open_clip ``resize_mode="longest"``),
CLIP mean/std.

Scale: ``hpsv2.score()`` returns the raw cosine (~0.27 for SD1.5), while HPSv2's benchmark
prints mean * 100, and the paper's tables report that scale (Table 3: Diffusion-DPO 27.19,
ours 27.84). ``SCALE = 100`` gives the published numbers; win rates do not depend on it.

Weights: ``HPS_v2_compressed.pt`` from hub repo ``xswu/HPSv2`` (default; HPSv2's own
default version, also what Diffusion-DPO's ``utils/hps_utils.py`` loads). Other forms:
``hpsv2=xswu/HPSv2/HPS_v2.1_compressed.pt`` (v2.1), ``hpsv2=/path/HPS_v2_compressed.pt``, or a
folder holding one of the two files. The ``hpsv2`` package is not used (it pins pytest and
its wheel lacks its vocabulary file); see ``_openclip.py`` for the loading rules.

Tested offline: a tiny random-weight open_clip model built from a config and saved as
``HPS_v2_compressed.pt``, loaded through this code, the formula checked against embeddings
computed by hand. Not tested: the real HPSv2 checkpoint, never loaded (no model hub in development).
"""

from __future__ import annotations

import numpy as np

from ..metrics import MetricFn, register_loader, with_weights
from ._openclip import cosine_scores, load_open_clip

DEFAULT_SOURCE = "xswu/HPSv2"
ARCH = "ViT-H-14"
CHECKPOINTS = ("HPS_v2_compressed.pt", "HPS_v2.1_compressed.pt")
SCALE = 100.0


def load(source: str) -> MetricFn:
    m = load_open_clip(
        source, default_arch=ARCH, hub_filename=CHECKPOINTS[0], local_names=CHECKPOINTS, resize_mode="longest"
    )

    def score(images: np.ndarray, prompts: list[str]) -> np.ndarray:
        return SCALE * cosine_scores(m, images, prompts)

    return with_weights(score, m.checkpoint)


register_loader(
    "hpsv2",
    load,
    default_source=DEFAULT_SOURCE,
    description="HPSv2: 100 * cos(open_clip ViT-H-14 + HPSv2 checkpoint image, text) (~27 for SD1.5)",
)
