"""ImageReward (Xu et al. 2023) as the ``imagereward`` metric: an optional adapter.

Formula: ImageReward's own ``score(prompt, images)`` (BLIP ViT-L image-text encoder + MLP
head, standardised with the package's fixed mean and std), so scores are on the paper's
scale (Table 3: 0.32 for Diffusion-DPO, 0.65 for ours). Images are grouped by prompt so
each prompt is encoded once per batch of its images.

Weights: ``ImageReward-v1.0`` (default; the package downloads it from hub repo
``THUDM/ImageReward``) or a local ``ImageReward.pt`` (``imagereward=/path/ImageReward.pt``).

The ``image-reward`` package is NOT a dependency and is not installed here: it needs
transformers < 4.56, ``setuptools<81`` and the undeclared ``clip`` package, so it cannot
live beside the transformers 5 that refbench uses, and it downloads ``bert-base-uncased``
files just to build its model. Use it from a separate environment, e.g.
``python -m venv .venv-ir && .venv-ir/bin/pip install -e . image-reward "transformers<4.56"
"setuptools<81" git+https://github.com/openai/CLIP.git``, then run ``refbench score ...
--metrics imagereward`` with that environment's python. Without the package the metric
fails with one line saying so.

Not run here: neither the package nor its weights were ever loaded; the tests check the
missing-package error only.
"""

from __future__ import annotations

import importlib
from collections import defaultdict

import numpy as np

from ..metrics import MetricFn, MetricLoadError, register_loader

from ._common import batches, device, to_pil

DEFAULT_SOURCE = "ImageReward-v1.0"
MODULE = "ImageReward"  # the import name of the image-reward package

MISSING = ("imagereward: the image-reward package is not installed (it needs transformers<4.56, so it cannot "
           "share refbench's environment); install it in a separate environment: "
           "pip install image-reward 'transformers<4.56' 'setuptools<81' git+https://github.com/openai/CLIP.git")


def _import_package():
    try:
        return importlib.import_module(MODULE)
    except ImportError as exc:  # ModuleNotFoundError, or a broken install next to transformers 5
        raise MetricLoadError(MISSING) from exc


def load(source: str) -> MetricFn:
    import torch

    rm = _import_package()
    model = rm.load(source, device=device())
    model.eval()

    def score(images: np.ndarray, prompts: list[str]) -> np.ndarray:
        out = np.empty(len(images), dtype=np.float64)
        with torch.no_grad():
            for sl in batches(len(images)):
                groups: dict[str, list[int]] = defaultdict(list)
                for i in range(sl.start, sl.stop):
                    groups[prompts[i]].append(i)
                for prompt, idx in groups.items():
                    rewards = model.score(prompt, to_pil(images[idx]))  # a float for one image
                    out[idx] = np.atleast_1d(np.asarray(rewards, dtype=np.float64))
        return out

    return score


register_loader(
    "imagereward", load, default_source=DEFAULT_SOURCE,
    description="ImageReward (optional: needs the image-reward package in a separate environment)",
)
