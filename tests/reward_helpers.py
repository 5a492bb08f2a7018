"""Tiny random-weight versions of the five reward models, saved the way their real weights are
published, so that tests load them through the very code that loads the real ones.

Used by tests/evaluation (test_rewards, test_imagereward, test_doctor) and tests/cli.
"""

from __future__ import annotations

import json
import math
from pathlib import Path


def byte_unicode() -> list[str]:
    """GPT-2's byte -> printable unicode table (what a byte-level BPE vocab is made of)."""
    keep = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def tiny_hf_clip(folder: Path, projection_dim: int = 16):
    """A ~0.1 M-parameter transformers CLIPModel + CLIPProcessor, saved to ``folder``."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder.mkdir(parents=True)
    chars = byte_unicode()
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    assert len(tokenizer) == 514
    eos = vocab["<|endoftext|>"]
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=eos - 1,
            eos_token_id=eos,
            pad_token_id=eos,
        ),
        vision_config=dict(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
        ),
        projection_dim=projection_dim,
        logit_scale_init_value=math.log(50.0),
    )
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    model.save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return model


TINY_OPEN_CLIP = {
    "model_cfg": {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
    },
    "preprocess_cfg": {},
}


def tiny_open_clip(folder: Path, filename: str, wrap: bool):
    """A tiny open_clip CLIP (3 MB, mostly the 49408-token embedding) saved as ``filename``."""
    import open_clip
    import torch

    folder.mkdir(parents=True)
    (folder / "open_clip_config.json").write_text(json.dumps(TINY_OPEN_CLIP))
    torch.manual_seed(1)
    model = open_clip.create_model(f"local-dir:{folder}", load_weights=False).eval()
    with torch.no_grad():
        model.logit_scale.fill_(3.0)  # not the init value, so a missed load would show
    state = model.state_dict()
    torch.save({"state_dict": state, "epoch": 1} if wrap else state, folder / filename)
    return model


def tiny_aesthetic(folder: Path) -> Path:
    """The LAION predictor's MLP (real layer names) on a tiny CLIP backbone in ``folder/clip``."""
    import torch

    from refbench.evaluation.rewards.aesthetic import MLP_FILE, build_mlp

    folder.mkdir(parents=True, exist_ok=True)
    tiny_hf_clip(folder / "clip", projection_dim=16)
    torch.manual_seed(2)
    torch.save(build_mlp(16).state_dict(), folder / MLP_FILE)
    return folder


# ---- ImageReward ---------------------------------------------------------------------------

IR_VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}
IR_MED = {
    "vocab_size": 80,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "max_position_embeddings": 40,
    "add_cross_attention": True,
}
IR_WORDS = "two red circles on a blue background green square white three yellow triangles".split()


def original_imagereward_keys(vision_layers: int, text_layers: int) -> list[str]:
    """Every key of a state dict saved by the image-reward package, written out by hand from its
    modules: BLIP's timm-style ViT (``models/BLIP/vit.py``), BLIP's BERT with cross-attention
    (``models/BLIP/med.py``: no token-type embeddings, ``position_ids`` saved as a buffer), BLIP's
    two projections, and the MLP head (``mlp.layers.{0,2,4,6,7}``: linears between dropouts)."""
    v = "blip.visual_encoder."
    keys = [v + "cls_token", v + "pos_embed", v + "patch_embed.proj.weight", v + "patch_embed.proj.bias"]
    for i in range(vision_layers):
        for part in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            keys += [f"{v}blocks.{i}.{part}.weight", f"{v}blocks.{i}.{part}.bias"]
    keys += [v + "norm.weight", v + "norm.bias"]
    t = "blip.text_encoder."
    keys += [
        t + "embeddings.position_ids",
        t + "embeddings.word_embeddings.weight",
        t + "embeddings.position_embeddings.weight",
        t + "embeddings.LayerNorm.weight",
        t + "embeddings.LayerNorm.bias",
    ]
    for i in range(text_layers):
        for block in ("attention", "crossattention"):
            for part in ("self.query", "self.key", "self.value", "output.dense", "output.LayerNorm"):
                keys += [f"{t}encoder.layer.{i}.{block}.{part}.weight", f"{t}encoder.layer.{i}.{block}.{part}.bias"]
        for part in ("intermediate.dense", "output.dense", "output.LayerNorm"):
            keys += [f"{t}encoder.layer.{i}.{part}.weight", f"{t}encoder.layer.{i}.{part}.bias"]
    keys += ["blip.vision_proj.weight", "blip.vision_proj.bias", "blip.text_proj.weight", "blip.text_proj.bias"]
    keys += [f"mlp.layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")]
    return keys


# The port's name of each original name, by hand (independent of _blip.KEY_MAP): (old, new) substrings.
HAND_RENAMES = [
    ("blip.visual_encoder.cls_token", "vision.embeddings.class_embedding"),
    ("blip.visual_encoder.pos_embed", "vision.embeddings.position_embedding"),
    ("blip.visual_encoder.patch_embed.proj", "vision.embeddings.patch_embedding"),
    ("blip.visual_encoder.blocks", "vision.encoder.layers"),
    ("blip.visual_encoder.norm", "vision.post_layernorm"),
    (".norm1", ".layer_norm1"),
    (".norm2", ".layer_norm2"),
    (".attn.qkv", ".self_attn.qkv"),
    (".attn.proj", ".self_attn.projection"),
    ("blip.text_encoder.", "text."),
    ("mlp.layers", "head.layers"),
]


def hand_rename(key: str) -> str | None:
    if key.startswith(("blip.vision_proj.", "blip.text_proj.")) or key.endswith("position_ids"):
        return None
    for old, new in HAND_RENAMES:
        if key.startswith(old) or (old.startswith(".") and old + "." in key):
            key = key.replace(old, new, 1)
    return key


def write_bert_vocab(folder: Path, words=IR_WORDS) -> None:
    """A WordPiece vocab.txt: [PAD] 0, [UNK], [CLS], [SEP], [MASK], letters, '##' letters, words."""
    letters = list("abcdefghijklmnopqrstuvwxyz")
    folder.mkdir(parents=True, exist_ok=True)
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + letters + ["##" + c for c in letters] + list(words)
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(tokens)) + "\n")


def tiny_imagereward(folder: Path, seed: int = 3) -> Path:
    """A tiny ImageReward saved as the package saves one: ``ImageReward.pt`` under the original key
    names (plus its unused projections and position_ids), ``med_config.json``,
    ``vision_config.json`` and ``tokenizer/vocab.txt``. Returns the checkpoint's path."""
    import torch

    from refbench.evaluation.rewards._blip import build_model

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = build_model(IR_VISION, IR_MED)
    with torch.no_grad():  # random biases and LayerNorms too, so that a wrong mapping shows
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(
                    torch.randn_like(p) * 0.1 + (1.0 if "norm" in name.lower() and name.endswith("weight") else 0.0)
                )
            else:  # weights scaled by fan-in: outputs that vary with the input, not a constant
                p.normal_(0.0, 1.0 / p[0].numel() ** 0.5)
    ours = model.state_dict()
    state = {}
    for key in original_imagereward_keys(IR_VISION["num_hidden_layers"], IR_MED["num_hidden_layers"]):
        new = hand_rename(key)
        if new is None:  # parts the score does not use: saved anyway, as the package does
            state[key] = (
                torch.arange(IR_MED["max_position_embeddings"])[None]
                if key.endswith("position_ids")
                else torch.zeros(4)
            )
        else:
            state[key] = ours[new].clone()
    torch.save(state, folder / "ImageReward.pt")
    (folder / "med_config.json").write_text(json.dumps({**IR_MED, "encoder_width": 768}))
    (folder / "vision_config.json").write_text(json.dumps(IR_VISION))
    write_bert_vocab(folder / "tokenizer")
    return folder / "ImageReward.pt"


def tiny_reward_models(root: Path) -> dict[str, Path]:
    """All five, each in its own folder under ``root``; metric name -> source."""
    root.mkdir(parents=True, exist_ok=True)
    tiny_hf_clip(root / "pickscore")
    tiny_open_clip(root / "hps", "HPS_v2_compressed.pt", wrap=True)
    tiny_open_clip(root / "clip", "open_clip_pytorch_model.bin", wrap=False)
    tiny_aesthetic(root / "aesthetic")
    tiny_imagereward(root / "imagereward")
    return {
        "pickscore": root / "pickscore",
        "hpsv2": root / "hps" / "HPS_v2_compressed.pt",
        "clip": root / "clip",
        "laion-aesthetic": root / "aesthetic",
        "imagereward": root / "imagereward",
    }
