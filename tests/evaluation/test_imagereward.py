"""ImageReward's port (refbench/evaluation/rewards/_blip.py, imagereward.py) on a tiny configuration.

The full-size check against the image-reward package's own code is a benchmark
(benchmarks/imagereward_equivalence.py, figures in benchmarks/RESULTS.md): the package cannot
be installed beside transformers 5. Here: the pieces that can be checked by hand (the head,
the normalisation, the key mapping), then a tiny ImageReward.pt saved under the package's key
names and loaded through the metric registry, as `refbench score` loads the real one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from reward_helpers import IR_MED, IR_VISION, hand_rename, original_imagereward_keys, tiny_imagereward

from refbench.evaluation import metrics
from refbench.evaluation.metrics import MetricLoadError, get_metric, weights_files

PROMPTS = [
    "two red circles on a blue background",
    "one green square",
    "three yellow triangles",
    "two blue squares on a white background",
    "a red triangle",
]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(len(PROMPTS), 24, 40, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def ir_dir(tmp_path_factory) -> Path:
    return tiny_imagereward(tmp_path_factory.mktemp("imagereward") / "ImageReward").parent


# ---- pieces by hand ------------------------------------------------------------------------


def test_standardisation_uses_imagereward_constants() -> None:
    """reward = (raw - 0.16717362830052426) / 1.0333394966054072: raw = mean gives 0, mean + std
    gives 1, mean - 2 std gives -2."""
    from refbench.evaluation.rewards._blip import MEAN, STD, standardise

    assert (MEAN, STD) == (0.16717362830052426, 1.0333394966054072)
    assert standardise(MEAN) == 0.0
    assert standardise(MEAN + STD) == pytest.approx(1.0, abs=1e-15)
    assert standardise(MEAN - 2 * STD) == pytest.approx(-2.0, abs=1e-15)


def test_head_and_normalisation_by_hand() -> None:
    """The head on a feature vector of 16 ones, with every linear's weights constant:
    layer 0 (16 -> 1024): 0.01 * 16 = 0.16, bias 0;  layer 2 (1024 -> 128): mean of its inputs,
    0.16, + bias 0.1 = 0.26;  layer 4 (128 -> 64) and 6 (64 -> 16): means, 0.26;  layer 7
    (16 -> 1): 0.5 * 16 * 0.26 = 2.08, bias -0.08: raw = 2.0. Dropouts are off in eval mode.
    Standardised: (2.0 - 0.16717362830052426) / 1.0333394966054072 = 1.773692361242785."""
    import torch

    from refbench.evaluation.rewards._blip import build_model

    model = build_model(IR_VISION, IR_MED).eval()
    layers = model.head.layers
    with torch.no_grad():
        for index, (weight, bias) in {
            0: (0.01, 0.0),
            2: (1 / 1024, 0.1),
            4: (1 / 128, 0.0),
            6: (1 / 64, 0.0),
            7: (0.5, -0.08),
        }.items():
            layers[index].weight.fill_(weight)
            layers[index].bias.fill_(bias)
    model.features = lambda pix, ids, mask: torch.ones(2, 16)  # the encoders are checked elsewhere
    with torch.no_grad():
        out = model(None, None, None)
    np.testing.assert_allclose(out.numpy(), [1.773692361242785] * 2, rtol=1e-5)  # float32 weights
    assert [type(m).__name__ for m in layers] == [
        "Linear",
        "Dropout",
        "Linear",
        "Dropout",
        "Linear",
        "Dropout",
        "Linear",
        "Linear",
    ]


@pytest.mark.parametrize(
    "original, port",
    [
        ("blip.visual_encoder.cls_token", "vision.embeddings.class_embedding"),
        ("blip.visual_encoder.pos_embed", "vision.embeddings.position_embedding"),
        ("blip.visual_encoder.patch_embed.proj.weight", "vision.embeddings.patch_embedding.weight"),
        ("blip.visual_encoder.blocks.23.norm1.bias", "vision.encoder.layers.23.layer_norm1.bias"),
        ("blip.visual_encoder.blocks.0.attn.qkv.weight", "vision.encoder.layers.0.self_attn.qkv.weight"),
        ("blip.visual_encoder.blocks.7.attn.proj.weight", "vision.encoder.layers.7.self_attn.projection.weight"),
        ("blip.visual_encoder.blocks.1.mlp.fc2.bias", "vision.encoder.layers.1.mlp.fc2.bias"),
        ("blip.visual_encoder.norm.weight", "vision.post_layernorm.weight"),
        (
            "blip.text_encoder.encoder.layer.11.crossattention.self.key.weight",
            "text.encoder.layer.11.crossattention.self.key.weight",
        ),
        ("blip.text_encoder.embeddings.word_embeddings.weight", "text.embeddings.word_embeddings.weight"),
        ("mlp.layers.7.bias", "head.layers.7.bias"),
        ("module.mlp.layers.0.weight", "head.layers.0.weight"),  # saved from DistributedDataParallel
        ("blip.vision_proj.weight", None),
        ("blip.text_proj.bias", None),  # BLIP's, unused by the score
        ("blip.text_encoder.embeddings.position_ids", None),  # a buffer the port rebuilds
    ],
)
def test_key_mapping(original: str, port: str | None) -> None:
    from refbench.evaluation.rewards._blip import map_key

    assert map_key(original) == port


def test_every_original_key_has_its_place() -> None:
    """The package's keys of a 2-block ViT + 2-layer BERT, written out by hand
    (reward_helpers.original_imagereward_keys), map one to one onto the port's parameters."""
    from refbench.evaluation.rewards._blip import build_model, map_key

    ours = set(build_model(IR_VISION, IR_MED).state_dict())
    original = original_imagereward_keys(2, 2)
    mapped = [map_key(k) for k in original]
    assert [m for m in mapped if m is not None] == [hand_rename(k) for k in original if hand_rename(k) is not None]
    used = [m for m in mapped if m is not None]
    assert len(used) == len(set(used)) and set(used) == ours
    assert mapped.count(None) == 5  # two projections (weight, bias) and position_ids
    assert len(ours) == 4 + 2 * 12 + 2 + 4 + 2 * 26 + 10


def test_default_architecture_is_vit_l16_and_bert_base() -> None:
    """BLIP's create_vit('large', 224) and ImageReward's med_config.json, with the text encoder's
    cross-attention reading the ViT's 1024-wide tokens (BLIP sets encoder_width to it)."""
    from refbench.evaluation.rewards._blip import text_config, vision_config

    v = vision_config()
    assert (
        v.hidden_size,
        v.num_hidden_layers,
        v.num_attention_heads,
        v.intermediate_size,
        v.image_size,
        v.patch_size,
        v.layer_norm_eps,
    ) == (1024, 24, 16, 4096, 224, 16, 1e-6)
    t = text_config({"encoder_width": 768}, v.hidden_size)
    assert (
        t.vocab_size,
        t.hidden_size,
        t.num_hidden_layers,
        t.num_attention_heads,
        t.encoder_hidden_size,
        t.is_decoder,
    ) == (30524, 768, 12, 12, 1024, True)


# ---- a tiny ImageReward.pt through the registry ----------------------------------------------------


def _by_hand(ckpt: Path, images: np.ndarray, prompts: list[str]) -> np.ndarray:
    """The score from transformers' BLIP modules loaded by hand, torchvision's transform, BERT tokens."""
    import torch
    from PIL import Image
    from torchvision.transforms import functional as F
    from transformers import BertTokenizer, BlipTextModel, BlipVisionModel

    from refbench.evaluation.rewards._blip import MEAN, STD, text_config, vision_config
    from refbench.evaluation.rewards.aesthetic import build_mlp

    state = {hand_rename(k): v for k, v in torch.load(ckpt, weights_only=True).items() if hand_rename(k)}
    vision, text, head = (
        BlipVisionModel(vision_config(IR_VISION)),
        BlipTextModel(text_config(IR_MED, 32), False),
        build_mlp(16),
    )
    for prefix, module in (("vision.", vision), ("text.", text), ("head.", head)):
        module.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
        module.eval()
    pix = []
    for img in images:  # short side to 32 (bicubic), centre crop, CLIP mean/std
        pil = F.resize(Image.fromarray(img), 32, interpolation=F.InterpolationMode.BICUBIC)
        pix.append(
            F.normalize(
                F.to_tensor(F.center_crop(pil, 32)),
                (0.48145466, 0.4578275, 0.40821073),
                (0.26862954, 0.26130258, 0.27577711),
            )
        )
    tok = BertTokenizer.from_pretrained(ckpt.parent / "tokenizer")(
        prompts, padding="max_length", max_length=35, truncation=True, return_tensors="pt"
    )
    assert tok["input_ids"].shape == (len(prompts), 35)
    with torch.no_grad():
        img = vision(pixel_values=torch.stack(pix)).last_hidden_state
        cls = text(
            input_ids=tok["input_ids"],
            attention_mask=tok["attention_mask"],
            encoder_hidden_states=img,
            encoder_attention_mask=torch.ones(img.shape[:2], dtype=torch.long),
        ).last_hidden_state[:, 0]
        raw = head.layers(cls).squeeze(-1)
    return ((raw - MEAN) / STD).numpy()


def test_tiny_imagereward_scores(ir_dir: Path, images: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    m = get_metric(f"imagereward={ir_dir}")
    out = m(images, PROMPTS)
    assert out.shape == (len(PROMPTS),) and out.dtype == np.float64 and np.all(np.isfinite(out))
    assert len(np.unique(out)) == len(out) and out.std() > 0.05  # the scores do depend on image and prompt
    np.testing.assert_array_equal(out, m(images, PROMPTS))  # deterministic: eval mode
    monkeypatch.setenv("REFBENCH_REWARD_BATCH", "2")
    np.testing.assert_allclose(m(images, PROMPTS), out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out, _by_hand(ir_dir / "ImageReward.pt", images, PROMPTS), rtol=1e-5, atol=1e-5)
    # the file form finds the configs and tokenizer beside it; both record the checkpoint as the weights
    file_metric = get_metric(f"imagereward={ir_dir / 'ImageReward.pt'}")
    np.testing.assert_allclose(file_metric(images, PROMPTS), out, rtol=1e-6)
    assert weights_files(m) == weights_files(file_metric) == (str(ir_dir / "ImageReward.pt"),)
    # the prompt matters: the text encoder cross-attends to the image
    assert not np.allclose(m(images, PROMPTS[::-1]), out)


def test_alias_of_the_package_name() -> None:
    assert get_metric("imagereward=ImageReward-v1.0").source == "ImageReward-v1.0"
    from refbench.evaluation.rewards.imagereward import ALIASES, DEFAULT_SOURCE

    assert ALIASES["ImageReward-v1.0"] == DEFAULT_SOURCE == "THUDM/ImageReward"


def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_SCORERS", {})


def test_missing_weight_one_line(ir_dir: Path, tmp_path: Path, images: np.ndarray, monkeypatch) -> None:
    import torch

    _fresh(monkeypatch)
    shutil.copytree(ir_dir, tmp_path / "ir")
    state = torch.load(tmp_path / "ir" / "ImageReward.pt", weights_only=True)
    del state["blip.visual_encoder.blocks.1.attn.qkv.weight"]
    state["blip.itm_head.weight"] = torch.zeros(2)  # a part ImageReward does not have
    torch.save(state, tmp_path / "ir" / "ImageReward.pt")
    with pytest.raises(MetricLoadError) as err:
        get_metric(f"imagereward={tmp_path / 'ir'}")(images[:1], PROMPTS[:1])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("imagereward: cannot load") and "not an ImageReward checkpoint" in msg
    assert "1 weights missing (e.g. vision.encoder.layers.1.self_attn.qkv.weight)" in msg
    assert "1 keys of no ImageReward part (e.g. blip.itm_head.weight)" in msg


def test_truncated_checkpoint_one_line(ir_dir: Path, tmp_path: Path, images: np.ndarray, monkeypatch) -> None:
    _fresh(monkeypatch)
    shutil.copytree(ir_dir, tmp_path / "ir")
    data = (tmp_path / "ir" / "ImageReward.pt").read_bytes()
    (tmp_path / "ir" / "ImageReward.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(MetricLoadError) as err:
        get_metric(f"imagereward={tmp_path / 'ir'}")(images[:1], PROMPTS[:1])
    assert "\n" not in str(err.value) and str(err.value).startswith(f"imagereward: cannot load '{tmp_path / 'ir'}': ")


def test_without_tokenizer_offline_one_line(ir_dir: Path, tmp_path: Path, images: np.ndarray, monkeypatch) -> None:
    """No tokenizer beside the checkpoint: bert-base-uncased from the hub cache, which is empty offline."""
    _fresh(monkeypatch)
    shutil.copytree(ir_dir, tmp_path / "ir")
    shutil.rmtree(tmp_path / "ir" / "tokenizer")
    with pytest.raises(MetricLoadError) as err:
        get_metric(f"imagereward={tmp_path / 'ir'}")(images[:1], PROMPTS[:1])
    msg = str(err.value)
    assert "\n" not in msg and "'bert-base-uncased'" in msg and "tokenizer/ folder beside ImageReward.pt" in msg


def test_bad_med_config_one_line(ir_dir: Path, tmp_path: Path, images: np.ndarray, monkeypatch) -> None:
    _fresh(monkeypatch)
    shutil.copytree(ir_dir, tmp_path / "ir")
    (tmp_path / "ir" / "med_config.json").write_text(json.dumps({**IR_MED, "add_cross_attention": False}))
    with pytest.raises(MetricLoadError) as err:
        get_metric(f"imagereward={tmp_path / 'ir'}")(images[:1], PROMPTS[:1])
    assert "\n" not in str(err.value) and "add_cross_attention" in str(err.value)
