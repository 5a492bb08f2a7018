"""Reward models: tiny random-weight versions of the real architectures, saved to a
temporary folder and loaded through the same ``name=/path`` code as the real weights.

The hub is off (conftest): the real weights are never loaded here. What is checked:
registry listing and metadata, the source syntax and caching, shapes, finiteness,
determinism, batching, each score formula against embeddings computed by hand, and the
one-line errors (offline default sources, missing files, paths that are not hub ids either).
ImageReward's port has its own file, test_imagereward.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from reward_helpers import TINY_OPEN_CLIP, tiny_aesthetic, tiny_hf_clip, tiny_open_clip

from refbench.evaluation import metrics
from refbench.evaluation.metrics import MetricLoadError, get_metric, list_metrics, register_loader

REWARDS = ("clip", "hpsv2", "imagereward", "laion-aesthetic", "pickscore")
PROMPTS = [
    "two red circles on a blue background",
    "one green square on a white background",
    "three yellow triangles on a black background",
    "one purple circle on a gray background",
    "two cyan squares on a green background",
]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(len(PROMPTS), 16, 16, 3), dtype=np.uint8)


# ---- tiny models (tests/reward_helpers.py) -------------------------------------------


@pytest.fixture(scope="module")
def pickscore_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pickscore") / "PickScore_v1"
    tiny_hf_clip(folder)
    return folder


@pytest.fixture(scope="module")
def hps_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hps") / "hps"
    tiny_open_clip(folder, "HPS_v2_compressed.pt", wrap=True)
    return folder / "HPS_v2_compressed.pt"


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clip") / "clip-h"
    tiny_open_clip(folder, "open_clip_pytorch_model.bin", wrap=False)
    return folder


@pytest.fixture(scope="module")
def aesthetic_dir(tmp_path_factory) -> Path:
    return tiny_aesthetic(tmp_path_factory.mktemp("aesthetic"))


def _by_hand_open_clip(path: Path, images: np.ndarray, prompts: list[str], resize_mode: str) -> np.ndarray:
    """cos(image, text) from a separately built model and open_clip's own pieces."""
    import open_clip
    import torch
    from PIL import Image

    model = open_clip.create_model(f"local-dir:{path.parent}", load_weights=False).eval()
    open_clip.load_checkpoint(model, str(path))
    pre = open_clip.image_transform(32, is_train=False, resize_mode=resize_mode)
    tok = open_clip.get_tokenizer("ViT-H-14")
    with torch.no_grad():
        img = model.encode_image(torch.stack([pre(Image.fromarray(x)) for x in images]))
        txt = model.encode_text(tok(prompts))
    img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
    return (img * txt).sum(-1).numpy().astype(np.float64)


# ---- registry ------------------------------------------------------------------


def test_listed_as_reward_models() -> None:
    assert list_metrics(kind="reward-model") == sorted(REWARDS)
    assert set(REWARDS) <= set(list_metrics())
    assert "aesthetic" in list_metrics(kind="oracle")  # the toy oracle keeps its name
    for name in REWARDS:
        m = get_metric(name)
        assert m.kind == "reward-model" and m.higher_is_better and m.aggregation == "mean" and m.description
        assert m.source  # the default source


def test_source_syntax_and_cache(tmp_path: Path) -> None:
    calls: list[str] = []

    def loader(source: str):
        calls.append(source)
        return lambda images, prompts: np.full(len(images), float(len(source)))

    register_loader("test-loader-metric", loader, default_source="owner/default")
    try:
        assert "test-loader-metric" in list_metrics(kind="reward-model")
        a, b = get_metric("test-loader-metric"), get_metric("test-loader-metric")
        assert a is b and a.source == "owner/default" and calls == []  # lazy: nothing loaded yet
        img = np.zeros((2, 4, 4, 3), np.uint8)
        a(img, ["x", "y"]), a(img, ["x", "y"])
        assert calls == ["owner/default"]  # loaded once
        local = get_metric(f"test-loader-metric={tmp_path}")
        assert local.source == str(tmp_path) and local.name == "test-loader-metric"
        local(img, ["x", "y"])
        assert calls == ["owner/default", str(tmp_path)]
        with pytest.raises(ValueError, match="already registered"):
            register_loader("test-loader-metric", loader, default_source="x")
    finally:
        metrics._LOADERS.pop("test-loader-metric", None)
    with pytest.raises(ValueError, match="already registered"):
        register_loader("colour", loader, default_source="x")


@pytest.mark.parametrize("bad", ["colour=/tmp/x", "pickscore=", "no-such-model=/tmp/x"])
def test_bad_names_one_line(bad: str) -> None:
    with pytest.raises(ValueError) as err:
        get_metric(bad)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_import_stays_cheap() -> None:
    code = (
        "import sys, refbench.evaluation.metrics as m; m.list_metrics(); m.get_metric('pickscore=/x'); "
        "print(sorted(k for k in ('torch', 'transformers', 'open_clip') if k in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- offline and missing sources -------------------------------------------------


@pytest.mark.parametrize("name", REWARDS)
def test_offline_default_source_one_line(name: str, images: np.ndarray) -> None:
    m = get_metric(name)
    with pytest.raises(MetricLoadError) as err:
        m(images[:1], PROMPTS[:1])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{name}: ") and m.source in msg and "offline" in msg.lower()
    assert f"{name}=/local/path" in msg


def test_hub_file_form_offline_one_line(images: np.ndarray) -> None:
    with pytest.raises(MetricLoadError) as err:
        get_metric("hpsv2=xswu/HPSv2/HPS_v2.1_compressed.pt")(images[:1], PROMPTS[:1])
    msg = str(err.value)
    assert "\n" not in msg and "'xswu/HPSv2/HPS_v2.1_compressed.pt'" in msg
    assert "(xswu/HPSv2, file HPS_v2.1_compressed.pt) it is not in the local hub cache and HF_HUB_OFFLINE is set" in msg


@pytest.mark.parametrize("name", REWARDS)
def test_missing_local_path_one_line(name: str, tmp_path: Path, images: np.ndarray) -> None:
    """A path that starts like one: no such file, and it cannot be a hub id either."""
    with pytest.raises(MetricLoadError) as err:
        get_metric(f"{name}={tmp_path}/absent")(images[:1], PROMPTS[:1])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{name}: no such file or folder '{tmp_path}/absent'")
    assert "hub id" in msg


@pytest.mark.parametrize("name", REWARDS)
def test_relative_path_tried_as_hub_id_too(
    name: str, tmp_path: Path, images: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``models/typo.pt`` (no such file here) could be a hub repo: both tries are named, in one line."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MetricLoadError) as err:
        get_metric(f"{name}=models/typo.pt")(images[:1], PROMPTS[:1])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{name}: no such file or folder 'models/typo.pt', and as a hub id (")
    assert "it is not in the local hub cache and HF_HUB_OFFLINE is set" in msg


def test_aesthetic_file_without_backbone_one_line(aesthetic_dir: Path, images: np.ndarray) -> None:
    from refbench.evaluation.rewards.aesthetic import MLP_FILE

    with pytest.raises(MetricLoadError) as err:
        get_metric(f"laion-aesthetic={aesthetic_dir / MLP_FILE}")(images[:1], PROMPTS[:1])
    assert "\n" not in str(err.value) and "openai/clip-vit-large-patch14" in str(err.value)


def test_wrong_architecture_one_line(tmp_path: Path, hps_file: Path, images: np.ndarray) -> None:
    import shutil

    other = json.loads(json.dumps(TINY_OPEN_CLIP))
    other["model_cfg"]["text_cfg"]["width"] = 32  # a config the checkpoint does not fit
    (tmp_path / "open_clip_config.json").write_text(json.dumps(other))
    shutil.copy(hps_file, tmp_path / "HPS_v2_compressed.pt")
    with pytest.raises(MetricLoadError) as err:
        get_metric(f"hpsv2={tmp_path}")(images[:1], PROMPTS[:1])
    assert "\n" not in str(err.value) and str(err.value).startswith(f"hpsv2: cannot load '{tmp_path}': ")


# ---- tiny models through the real loading code -------------------------------------


def _check_basic(name: str, images: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    m = get_metric(name)
    out = m(images, PROMPTS)
    assert out.shape == (len(images),) and out.dtype == np.float64 and np.all(np.isfinite(out))
    np.testing.assert_array_equal(out, m(images, PROMPTS))  # deterministic (eval mode, no dropout)
    monkeypatch.setenv("REFBENCH_REWARD_BATCH", "2")  # 3 batches instead of 1: same scores
    np.testing.assert_allclose(m(images, PROMPTS), out, rtol=1e-5, atol=1e-5)
    assert len(np.unique(out)) == len(out)  # the images and prompts differ, so should the scores
    return out


def test_pickscore_tiny(pickscore_dir: Path, images: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from transformers import CLIPModel, CLIPProcessor

    from refbench.evaluation.rewards._common import pooled, to_pil

    out = _check_basic(f"pickscore={pickscore_dir}", images, monkeypatch)
    model, proc = CLIPModel.from_pretrained(pickscore_dir).eval(), CLIPProcessor.from_pretrained(pickscore_dir)
    with torch.no_grad():
        pix = proc(images=to_pil(images), return_tensors="pt")["pixel_values"]
        assert pix.shape[-2:] == (32, 32)  # the 16 px images were resized by the processor
        txt = proc(text=PROMPTS, padding=True, return_tensors="pt")
        i = pooled(model.get_image_features(pixel_values=pix))
        t = pooled(model.get_text_features(input_ids=txt["input_ids"], attention_mask=txt["attention_mask"]))
        cos = torch.nn.functional.cosine_similarity(i, t, dim=-1)
        expect = (model.logit_scale.exp() * cos).numpy()
    assert model.logit_scale.exp().item() == pytest.approx(50.0, rel=1e-5)
    np.testing.assert_allclose(out, expect, rtol=1e-5, atol=1e-5)


def test_hpsv2_tiny(hps_file: Path, images: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    out = _check_basic(f"hpsv2={hps_file}", images, monkeypatch)
    expect = 100.0 * _by_hand_open_clip(hps_file, images, PROMPTS, "longest")
    np.testing.assert_allclose(out, expect, rtol=1e-5, atol=1e-4)
    # the folder form finds the checkpoint by its published name
    np.testing.assert_allclose(get_metric(f"hpsv2={hps_file.parent}")(images, PROMPTS), out, rtol=1e-5, atol=1e-4)


def test_clip_tiny(clip_dir: Path, images: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    out = _check_basic(f"clip={clip_dir}", images, monkeypatch)
    expect = 100.0 * _by_hand_open_clip(clip_dir / "open_clip_pytorch_model.bin", images, PROMPTS, "shortest")
    np.testing.assert_allclose(out, expect, rtol=1e-5, atol=1e-4)


def test_laion_aesthetic_tiny(aesthetic_dir: Path, images: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from transformers import CLIPImageProcessor, CLIPModel

    from refbench.evaluation.rewards._common import pooled, to_pil
    from refbench.evaluation.rewards.aesthetic import MLP_FILE

    out = _check_basic(f"laion-aesthetic={aesthetic_dir}", images, monkeypatch)
    clip = CLIPModel.from_pretrained(aesthetic_dir / "clip").eval()
    proc = CLIPImageProcessor.from_pretrained(aesthetic_dir / "clip")
    with torch.no_grad():
        emb = pooled(
            clip.get_image_features(pixel_values=proc(images=to_pil(images), return_tensors="pt")["pixel_values"])
        )
    x = (emb / emb.norm(dim=-1, keepdim=True)).numpy().astype(np.float64)
    state = torch.load(aesthetic_dir / MLP_FILE, weights_only=True)
    assert sorted(state) == sorted(f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias"))
    for i in (0, 2, 4, 6, 7):  # linear layers only: no activations, dropouts off in eval
        x = x @ state[f"layers.{i}.weight"].numpy().T + state[f"layers.{i}.bias"].numpy()
    np.testing.assert_allclose(out, x[:, 0], rtol=1e-5, atol=1e-5)
    # the prompt does not matter
    no_prompt = get_metric(f"laion-aesthetic={aesthetic_dir}")(images, ["x"] * len(images))
    np.testing.assert_allclose(no_prompt, out, rtol=1e-5, atol=1e-6)
