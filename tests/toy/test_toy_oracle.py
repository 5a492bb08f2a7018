"""Tests of the metric registry and the toy oracle rewards."""

from __future__ import annotations

import numpy as np
import pytest

from refbench.evaluation import metrics
from refbench.evaluation.metrics import get_metric, list_metrics, register_metric
from refbench.toy.oracle import HUMAN_WEIGHTS, analyse
from refbench.toy.prompts import ToyPrompt, all_prompts
from refbench.toy.render import Corruption, random_corruption, render_clean, render_corrupted, render_web

ORACLES = ("colour", "count", "shape", "aesthetic", "human")


def _sample(n: int, seed: int = 0) -> list[ToyPrompt]:
    pool = all_prompts()
    return [pool[i] for i in np.random.default_rng(seed).integers(0, len(pool), n)]


def _pairs(prompts: list[ToyPrompt], make) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Clean and corrupted renders sharing each prompt's rng seed (same layout)."""
    crng = np.random.default_rng(123)
    clean, bad = [], []
    for i, p in enumerate(prompts):
        corr = make(crng)
        clean.append(render_clean(p, np.random.default_rng(i)))
        bad.append(render_corrupted(p, corr, np.random.default_rng(i)))
    return np.stack(clean), np.stack(bad), [p.text for p in prompts]


# ---- registry -------------------------------------------------------------


def test_builtin_metrics_registered() -> None:
    names = list_metrics()
    for n in (*ORACLES, "background"):
        assert n in names
    assert set(ORACLES) <= set(list_metrics(kind="oracle"))
    assert list_metrics(kind="no-such-kind") == []
    m = get_metric("human")
    assert m.higher_is_better and m.aggregation == "mean" and m.kind == "oracle" and m.description


def test_unknown_metric_one_line() -> None:
    with pytest.raises(KeyError) as err:
        get_metric("clip-score-typo")
    msg = str(err.value)
    assert "\n" not in msg and "colour" in msg and "human" in msg
    with pytest.raises(ValueError):  # also catchable as ValueError
        get_metric("nope")


def test_register_and_duplicate() -> None:
    name = "test-constant-metric"
    try:

        @register_metric(name, kind="test", higher_is_better=False, description="always 1")
        def const(images: np.ndarray, prompts: list[str]) -> np.ndarray:
            return np.ones(len(images))

        assert name in list_metrics(kind="test")
        m = get_metric(name)
        assert not m.higher_is_better
        assert m(np.zeros((2, 16, 16, 3), np.uint8), ["a", "b"]).tolist() == [1.0, 1.0]
        with pytest.raises(ValueError, match="already registered"):
            register_metric(name)(const)
        with pytest.raises(ValueError, match="already registered"):
            register_metric("colour")(const)
    finally:
        metrics._REGISTRY.pop(name, None)


def test_metric_call_validates() -> None:
    m = get_metric("colour")
    img = render_clean(ToyPrompt(1, "red", "circle", "black"))[None]
    with pytest.raises(ValueError):
        m(img[..., 0], ["one red circle on a black background"])
    with pytest.raises(ValueError):
        m(img, [])
    with pytest.raises(ValueError):
        m(img, ["a red dog"])


# ---- oracle values ----------------------------------------------------------


def test_hand_example() -> None:
    """Canonical "one red circle on a black background": the border is pure black
    (0, 0, 0) = the prompt background, so background = exp(0) = 1 exactly; one
    component, so count >= 0.8 * exp(0) = 0.8; all scores lie in [0, 1]; the human
    weights sum to 0.25 + 0.2 + 0.2 + 0.1 + 0.2 + 0.05 = 1."""
    p = ToyPrompt(1, "red", "circle", "black")
    a = analyse(render_clean(p)[None], [p.text])
    assert a["background"][0] == 1.0
    assert a["n_components"][0] == 1
    assert a["count"][0] >= 0.8
    assert abs(sum(HUMAN_WEIGHTS.values()) - 1.0) < 1e-12
    for k in (*ORACLES, "background", "composition"):
        assert 0.0 <= a[k][0] <= 1.0


def test_metric_fn_matches_analyse() -> None:
    prompts = _sample(20)
    imgs = np.stack([render_web(p, np.random.default_rng(i)) for i, p in enumerate(prompts)])
    texts = [p.text for p in prompts]
    a = analyse(imgs, texts)
    for k in ORACLES:
        assert np.array_equal(get_metric(k)(imgs, texts), a[k])


def test_empty_image_scores_zero() -> None:
    """A plain white image for a prompt on a white background (a model can draw nothing)."""
    p = ToyPrompt(2, "red", "square", "white")
    img = np.full((1, 16, 16, 3), 255, np.uint8)
    a = analyse(img, [p.text])
    assert a["n_components"][0] == 0 and a["colour"][0] == 0 and a["shape"][0] == 0


def test_scores_continuous_on_web_images() -> None:
    prompts = _sample(300, seed=1)
    rng = np.random.default_rng(0)
    imgs = np.stack([render_web(p, rng) for p in prompts])
    a = analyse(imgs, [p.text for p in prompts])
    for k in ORACLES:
        assert np.isfinite(a[k]).all() and (a[k] >= 0).all() and (a[k] <= 1).all()
        assert len(np.unique(a[k])) > 0.9 * len(prompts), k  # few exact ties


CHECKS = [
    ("colour", lambda r: Corruption(wrong_colour=True)),
    ("count", lambda r: Corruption(count_delta=int(r.choice([-1, 1])))),
    ("shape", lambda r: Corruption(wrong_shape=True)),
    ("background", lambda r: Corruption(wrong_background=True)),
    ("aesthetic", lambda r: Corruption(blur=1.0)),
    ("aesthetic", lambda r: Corruption(noise=0.08)),
    ("human", lambda r: random_corruption(r, 0.7)),
]


@pytest.mark.parametrize("metric,make", CHECKS)
def test_oracle_check_clean_above_corrupted(metric: str, make) -> None:
    """Clean beats the render corrupted in the metric's attribute in >= 95 % of 200 pairs,
    and on average."""
    clean, bad, texts = _pairs(_sample(200), make)
    s_clean, s_bad = analyse(clean, texts)[metric], analyse(bad, texts)[metric]
    assert np.mean(s_clean > s_bad) >= 0.95
    assert s_clean.mean() > s_bad.mean()


@pytest.mark.parametrize("metric,make", CHECKS[:3])
def test_adherence_robust_to_mild_blur_and_noise(metric: str, make) -> None:
    """Diffusion samples are slightly blurred and noisy: with blur 0.5 px and noise 0.02
    on both images, the correct attribute still wins in >= 95 % of pairs."""
    prompts = _sample(200, seed=2)
    crng = np.random.default_rng(7)
    soft = dict(blur=0.5, noise=0.02)
    good, bad = [], []
    for i, p in enumerate(prompts):
        c = make(crng)
        good.append(render_corrupted(p, Corruption(**soft), np.random.default_rng(i)))
        bad.append(render_corrupted(p, Corruption(**{**c.__dict__, **soft}), np.random.default_rng(i)))
    texts = [p.text for p in prompts]
    assert np.mean(analyse(np.stack(good), texts)[metric] > analyse(np.stack(bad), texts)[metric]) >= 0.95


def test_every_metric_moves_with_level() -> None:
    """Mean human and aesthetic fall monotonically with the corruption level."""
    prompts = _sample(150, seed=3)
    texts = [p.text for p in prompts]
    means = []
    for level in (0.0, 0.3, 0.6, 0.9):
        rng = np.random.default_rng(0)
        imgs = np.stack([render_web(p, rng, level=level) for p in prompts])
        a = analyse(imgs, texts)
        means.append([a[k].mean() for k in ORACLES])
    means = np.array(means)
    assert (np.diff(means, axis=0) < 0).all(), means
