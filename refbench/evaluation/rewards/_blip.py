"""ImageReward's network (Xu et al. 2023) from transformers' BLIP classes and torch: no ``image-reward``.

ImageReward = BLIP (ViT image encoder, BERT text encoder with cross-attention to the image
tokens) + an MLP head on the text encoder's first ([CLS]) output token, standardised:

    reward = (MLP(text_encoder(prompt, cross-attending to ViT(image))[:, 0]) - MEAN) / STD

with ImageReward's fixed ``MEAN = 0.16717362830052426`` and ``STD = 1.0333394966054072``.
The pieces map one to one onto transformers' modules:

| ImageReward (``ImageReward.pt`` key prefix)           | here                                      |
|-------------------------------------------------------|-------------------------------------------|
| ``blip.visual_encoder`` (BLIP's timm-style ViT)       | ``vision``: ``BlipVisionModel``           |
| ``blip.text_encoder`` (BLIP's ``med.py`` BertModel)   | ``text``: ``BlipTextModel`` (no pooler)   |
| ``mlp.layers`` (5 linears, dropouts, no activations)  | ``head.layers`` (``aesthetic.build_mlp``) |
| ``blip.vision_proj``, ``blip.text_proj``              | unused by the score: skipped              |

``map_key`` renames the ViT's timm names (``blocks.N.attn.qkv`` -> ``encoder.layers.N.self_attn.qkv``
...); both fuse q, k, v in one linear in the same order, so no tensor is reshaped. The text
encoder's names are BLIP's ``med.py`` names, which ``BlipTextModel`` kept.

Architecture: ViT-L/16 at 224 px (BLIP's ``create_vit('large', 224)``: width 1024, 24 blocks,
16 heads, LayerNorm eps 1e-6) and ImageReward's ``med_config.json`` (BERT-base, 12 layers,
vocabulary 30524, cross-attention to width 1024: BLIP sets ``encoder_width`` to the ViT's
width). Both can be overridden by ``vision_config.json`` (``BlipVisionConfig`` fields) and
``med_config.json`` beside the checkpoint, which is how the tests build tiny versions.
Preprocessing is ImageReward's: resize the short side to 224 (bicubic), centre crop, CLIP
mean/std; prompts: BERT ``bert-base-uncased`` tokens, padded and truncated to 35.
"""

from __future__ import annotations

import re
from typing import Any

MEAN = 0.16717362830052426
STD = 1.0333394966054072
MAX_LENGTH = 35  # ImageReward pads and truncates prompts to 35 tokens
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's, as in ImageReward's _transform
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)

# BLIP's create_vit('large', image_size=224): timm VisionTransformer, qkv_bias, LayerNorm eps 1e-6.
VISION_DEFAULTS: dict[str, Any] = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=224,
    patch_size=16,
    layer_norm_eps=1e-6,
    hidden_act="gelu",
)
# ImageReward's med_config.json (BLIP's, a bert-base-uncased config with two added tokens).
MED_DEFAULTS: dict[str, Any] = dict(
    vocab_size=30524,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=512,
    hidden_act="gelu",
    layer_norm_eps=1e-12,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    initializer_range=0.02,
    pad_token_id=0,
    add_cross_attention=True,
)
_TEXT_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "max_position_embeddings",
    "hidden_act",
    "layer_norm_eps",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "initializer_range",
    "pad_token_id",
)

# (pattern, replacement) on ImageReward.pt keys; the first that matches wins.
KEY_MAP: tuple[tuple[str, str], ...] = (
    (r"^blip\.visual_encoder\.cls_token$", "vision.embeddings.class_embedding"),
    (r"^blip\.visual_encoder\.pos_embed$", "vision.embeddings.position_embedding"),
    (r"^blip\.visual_encoder\.patch_embed\.proj\.", "vision.embeddings.patch_embedding."),
    (r"^blip\.visual_encoder\.blocks\.(\d+)\.norm1\.", r"vision.encoder.layers.\1.layer_norm1."),
    (r"^blip\.visual_encoder\.blocks\.(\d+)\.norm2\.", r"vision.encoder.layers.\1.layer_norm2."),
    (r"^blip\.visual_encoder\.blocks\.(\d+)\.attn\.qkv\.", r"vision.encoder.layers.\1.self_attn.qkv."),
    (r"^blip\.visual_encoder\.blocks\.(\d+)\.attn\.proj\.", r"vision.encoder.layers.\1.self_attn.projection."),
    (r"^blip\.visual_encoder\.blocks\.(\d+)\.mlp\.(fc[12])\.", r"vision.encoder.layers.\1.mlp.\2."),
    (r"^blip\.visual_encoder\.norm\.", "vision.post_layernorm."),
    (r"^blip\.text_encoder\.", "text."),
    (r"^mlp\.layers\.", "head.layers."),
)
# Keys of ImageReward.pt that the score does not use.
UNUSED = re.compile(r"^blip\.(vision_proj|text_proj)\.|^blip\.text_encoder\.embeddings\.position_ids$")


class CheckpointMismatch(ValueError):
    """ImageReward.pt does not fit the architecture; one line naming the first offending keys."""


def map_key(key: str) -> str | None:
    """This port's name for an ``ImageReward.pt`` key; None for a key the score does not use.
    A key of none of ImageReward's known parts is returned unchanged (and then reported)."""
    if key.startswith("module."):  # saved from a DistributedDataParallel wrapper
        key = key[len("module.") :]
    if UNUSED.search(key):
        return None
    for pattern, replacement in KEY_MAP:
        if re.search(pattern, key):
            return re.sub(pattern, replacement, key)
    return key


def convert_state_dict(state: dict[str, Any], expected: set[str]) -> dict[str, Any]:
    """ImageReward.pt's state dict under this port's names; CheckpointMismatch if a key needed is
    missing or a key is of no known part (a checkpoint of another model)."""
    if isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    out = {}
    for key, value in state.items():
        new = map_key(key)
        if new is not None:
            out[new] = value
    missing, unexpected = sorted(expected - set(out)), sorted(set(out) - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weights missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} keys of no ImageReward part (e.g. {', '.join(unexpected[:3])})")
        raise CheckpointMismatch("not an ImageReward checkpoint of this architecture: " + "; ".join(parts))
    return out


def vision_config(overrides: dict[str, Any] | None = None):
    from transformers import BlipVisionConfig

    return BlipVisionConfig(**{**VISION_DEFAULTS, **(overrides or {})})


def text_config(med: dict[str, Any] | None, encoder_width: int):
    """A ``BlipTextConfig`` from a ``med_config.json`` dict; cross-attention to ``encoder_width``."""
    from transformers import BlipTextConfig

    med = {**MED_DEFAULTS, **(med or {})}
    if not med.get("add_cross_attention", False):
        raise CheckpointMismatch("med_config.json: ImageReward's text encoder needs add_cross_attention = true")
    if med.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointMismatch("med_config.json: only absolute position embeddings are supported")
    # bos/eos/sep ids only matter for generation; None keeps a small test vocabulary valid
    return BlipTextConfig(
        **{k: med[k] for k in _TEXT_FIELDS},
        encoder_hidden_size=encoder_width,
        is_decoder=True,
        bos_token_id=None,
        eos_token_id=None,
        sep_token_id=None,
    )


def build_model(vision_overrides: dict[str, Any] | None = None, med: dict[str, Any] | None = None):
    """The ImageReward network with fresh (random) weights; ``load_state_dict`` fills it."""
    import torch
    from torch import nn
    from transformers import BlipTextModel, BlipVisionModel

    from .aesthetic import build_mlp

    vcfg = vision_config(vision_overrides)
    tcfg = text_config(med, vcfg.hidden_size)

    class ImageRewardNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vision = BlipVisionModel(vcfg)
            self.text = BlipTextModel(tcfg, add_pooling_layer=False)
            self.head = build_mlp(tcfg.hidden_size)  # the same five linears as the LAION predictor
            self.image_size = vcfg.image_size

        def features(
            self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
        ) -> torch.Tensor:
            """The text encoder's [CLS] output, cross-attending to every image token (N, hidden)."""
            image = self.vision(pixel_values=pixel_values).last_hidden_state
            image_mask = torch.ones(image.shape[:-1], dtype=torch.long, device=image.device)
            out = self.text(
                input_ids=input_ids,
                attention_mask=attention_mask,
                encoder_hidden_states=image,
                encoder_attention_mask=image_mask,
                return_dict=True,
            )
            return out.last_hidden_state[:, 0, :].float()

        def forward(
            self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
        ) -> torch.Tensor:
            return standardise(self.head.layers(self.features(pixel_values, input_ids, attention_mask)).squeeze(-1))

    return ImageRewardNet()


def standardise(raw):
    """ImageReward's fixed normalisation of the head's output."""
    return (raw - MEAN) / STD


def preprocess(image_size: int):
    """ImageReward's image transform: PIL RGB -> (3, S, S) tensor."""
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

    return Compose(
        [
            Resize(image_size, interpolation=InterpolationMode.BICUBIC),
            CenterCrop(image_size),
            ToTensor(),
            Normalize(IMAGE_MEAN, IMAGE_STD),
        ]
    )


def load_tokenizer(source: str):
    """BERT's tokenizer with the two tokens BLIP adds ([DEC] as bos, [ENC]), as ImageReward builds it."""
    from transformers import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(source)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer
