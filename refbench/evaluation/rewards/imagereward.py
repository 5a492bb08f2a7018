"""ImageReward (Xu et al. 2023) as the ``imagereward`` metric, in refbench's own environment.

Formula: reward = (MLP(BLIP text encoder [CLS] output, cross-attending to BLIP ViT-L/16 image
tokens) - 0.16717) / 1.03334, ImageReward's own score (Table 3: 0.32 for Diffusion-DPO,
0.65 for ours). The network is rebuilt from transformers' BLIP classes (``_blip.py``, with
the key mapping of the official checkpoint); the ``image-reward`` package is not used, so
no transformers < 4.56 and no download of ``bert-base-uncased`` while building the model.
``benchmarks/imagereward_equivalence.py`` checks it against the package's own code
(``benchmarks/RESULTS.md``: the same random weights give the same scores within 1e-4).

Sources (``imagereward=SOURCE``):
- default ``THUDM/ImageReward`` (alias ``ImageReward-v1.0``, the package's name for it): its
  ``ImageReward.pt`` and ``med_config.json`` from the hub cache, the tokenizer from
  ``bert-base-uncased`` (hub cache);
- a local ``ImageReward.pt`` (or ``.safetensors``), or a folder holding it. Beside the file,
  optionally: ``med_config.json`` (default: ImageReward's), ``vision_config.json``
  (``BlipVisionConfig`` fields; default: ViT-L/16 at 224), and the BERT tokenizer as
  ``tokenizer/`` or as ``vocab.txt`` in the folder itself (default: ``bert-base-uncased`` from
  the hub cache). Offline, a folder with ``ImageReward.pt``, ``med_config.json`` and
  ``tokenizer/`` (bert-base-uncased's ``vocab.txt``) is all it takes;
- a hub repo ``owner/name`` or ``owner/name/file.pt``.

Tested offline: a tiny configuration built from configs and loaded through this code (the
tests), and random full-size weights scored identically to the package (the equivalence
check). Not tested: the official ``ImageReward.pt``, never loaded (no model hub in development).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..metrics import MetricFn, MetricLoadError, register_loader, with_weights
from ._common import batches, device, find_file, hub_file, local_path, looks_local, to_pil

DEFAULT_SOURCE = "THUDM/ImageReward"
ALIASES = {"ImageReward-v1.0": DEFAULT_SOURCE}
CHECKPOINT = "ImageReward.pt"
MED_CONFIG = "med_config.json"
VISION_CONFIG = "vision_config.json"
TOKENIZER_SOURCE = "bert-base-uncased"
PATTERNS = ("*.pt", "*.pth", "*.bin", "*.safetensors")


@dataclass
class Resolved:
    checkpoint: Path
    tokenizer: str
    med: dict = field(default_factory=dict)
    vision: dict = field(default_factory=dict)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MetricLoadError(f"imagereward: cannot read {path}: {exc}") from None


def resolve(source: str) -> Resolved:
    """Where the checkpoint, configs and tokenizer of an ``imagereward`` source are."""
    source = ALIASES.get(source, source)
    if looks_local(source):
        path = local_path(source)
        ckpt = find_file(path, (CHECKPOINT,), PATTERNS) if path.is_dir() else path
        folder = ckpt.parent
        tokenizer = TOKENIZER_SOURCE
        if (folder / "tokenizer").is_dir():
            tokenizer = str(folder / "tokenizer")
        elif (folder / "vocab.txt").is_file():
            tokenizer = str(folder)
        med = _read_json(folder / MED_CONFIG) if (folder / MED_CONFIG).is_file() else {}
        vision = _read_json(folder / VISION_CONFIG) if (folder / VISION_CONFIG).is_file() else {}
        return Resolved(ckpt, tokenizer, med, vision)
    parts = source.split("/")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:]) or CHECKPOINT
    ckpt = Path(hub_file(repo, filename, source=source))
    try:  # the official repo has it; without it, ImageReward's own values (MED_DEFAULTS) apply
        med = _read_json(Path(hub_file(repo, MED_CONFIG)))
    except FileNotFoundError:
        med = {}
    return Resolved(ckpt, TOKENIZER_SOURCE, med, {})


def read_state_dict(path: Path) -> dict:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def load_model(resolved: Resolved):
    """The network with the checkpoint's weights, in eval mode on ``device()``."""
    import torch

    from ._blip import build_model, convert_state_dict

    state = read_state_dict(resolved.checkpoint)
    model = build_model(resolved.vision, resolved.med)
    converted = convert_state_dict(state, set(model.state_dict()))
    model.load_state_dict(converted, strict=True)
    del state, converted
    with torch.no_grad():
        return model.eval().requires_grad_(False).to(device())


def tokenizer_folder(resolved: Resolved) -> str:
    """A folder holding the BERT vocabulary. Checked here: transformers 5 builds an empty BERT
    tokenizer, without an error, from a hub id it cannot reach."""
    source = resolved.tokenizer
    try:
        if looks_local(source):
            folder = local_path(source)
            if not any((folder / name).is_file() for name in ("vocab.txt", "tokenizer.json")):
                raise FileNotFoundError(f"{folder} has no vocab.txt")
            return str(folder)
        vocab = Path(hub_file(source, "vocab.txt"))
        try:  # its settings (lower case) when the hub cache has them; BERT's defaults otherwise
            hub_file(source, "tokenizer_config.json")
        except FileNotFoundError:
            pass
        return str(vocab.parent)
    except FileNotFoundError as exc:  # the weights loaded; say which part is missing
        raise MetricLoadError(
            f"imagereward: cannot load the BERT tokenizer {source!r} (offline, or not found); put "
            f"bert-base-uncased's vocab.txt in a tokenizer/ folder beside {resolved.checkpoint.name}"
        ) from exc


def load(source: str) -> MetricFn:
    import torch

    from ._blip import MAX_LENGTH, load_tokenizer, preprocess

    resolved = resolve(source)
    model = load_model(resolved)
    tokenizer = load_tokenizer(tokenizer_folder(resolved))
    transform = preprocess(model.image_size)
    dev = next(model.parameters()).device

    def score(images: np.ndarray, prompts: list[str]) -> np.ndarray:
        out = np.empty(len(images), dtype=np.float64)
        with torch.no_grad():
            for sl in batches(len(images)):
                pix = torch.stack([transform(im) for im in to_pil(images[sl])]).to(dev)
                tok = tokenizer(
                    prompts[sl], padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
                ).to(dev)
                out[sl] = model(pix, tok["input_ids"], tok["attention_mask"]).cpu().numpy()
        return out

    return with_weights(score, resolved.checkpoint)


register_loader(
    "imagereward",
    load,
    default_source=DEFAULT_SOURCE,
    description="ImageReward: standardised MLP(BLIP text-image encoder) (~0.3-0.7 for SD1.5 DPO runs)",
)
