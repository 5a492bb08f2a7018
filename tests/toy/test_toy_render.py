"""Tests of the numpy renderer."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from refbench.toy.prompts import PALETTE, ToyPrompt, all_prompts
from refbench.toy.render import (
    IMAGE_SIZE,
    Corruption,
    from_png_bytes,
    random_corruption,
    render_clean,
    render_corrupted,
    render_web,
    to_png_bytes,
)

P = ToyPrompt(2, "red", "circle", "blue")


def _components(img: np.ndarray, bg: tuple[int, int, int]) -> int:
    fg = np.abs(img.astype(int) - np.array(bg)).sum(axis=-1) > 100
    return int(ndimage.label(fg)[1])


def test_shape_dtype_and_size() -> None:
    img = render_clean(P)
    assert img.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and img.dtype == np.uint8
    assert render_clean(P, size=32).shape == (32, 32, 3)
    assert render_web(P, np.random.default_rng(0), size=24).shape == (24, 24, 3)


def test_clean_colours_in_place() -> None:
    """ "red" is (220, 40, 40) and "blue" is (40, 80, 220). Two objects sit at
    x = 8 -/+ 3.75 px = 4.25 and 11.75 on row y = 8; the circle radius is 2.5 px,
    so pixel (8, 4) (centre 8.5, 4.5) is fully inside the left circle and the
    border rows (0, 15) and the middle column (x = 8, between the circles, more
    than 1 px from either edge) are pure background."""
    img = render_clean(P)
    assert tuple(img[8, 4]) == (220, 40, 40) == PALETTE["red"]
    assert tuple(img[8, 11]) == PALETTE["red"]
    bg = np.array(PALETTE["blue"], dtype=np.uint8)
    assert (img[0] == bg).all() and (img[-1] == bg).all() and (img[:, 8] == bg).all()
    assert (img[:, 0] == bg).all() and (img[:, -1] == bg).all()
    # only two colours plus anti-aliased mixes of them: every pixel lies on the segment
    t = (img.astype(float) - bg) @ (np.subtract(PALETTE["red"], bg)) / np.sum(np.subtract(PALETTE["red"], bg) ** 2)
    mix = bg + t[..., None] * np.subtract(PALETTE["red"], bg)
    assert np.abs(mix - img).max() <= 1.0


@pytest.mark.parametrize("count", [1, 2, 3])
def test_clean_count_components(count: int) -> None:
    for shape in ("circle", "square", "triangle"):
        p = ToyPrompt(count, "yellow", shape, "black")
        for seed in range(10):
            assert _components(render_clean(p, np.random.default_rng(seed)), PALETTE["black"]) == count


def test_deterministic_given_seed() -> None:
    for p in all_prompts()[::17]:
        a = render_web(p, np.random.default_rng(5))
        b = render_web(p, np.random.default_rng(5))
        assert np.array_equal(a, b)
        assert np.array_equal(render_clean(p, np.random.default_rng(1)), render_clean(p, np.random.default_rng(1)))
        assert np.array_equal(render_clean(p), render_clean(p))
    # different seeds differ (jitter, corruption draw)
    imgs = {render_web(P, np.random.default_rng(s)).tobytes() for s in range(10)}
    assert len(imgs) == 10


def test_no_corruption_equals_clean() -> None:
    """The layout is drawn first, so an empty corruption reproduces the clean render."""
    for seed in range(5):
        a = render_corrupted(P, Corruption(), np.random.default_rng(seed))
        assert np.array_equal(a, render_clean(P, np.random.default_rng(seed)))
    assert np.array_equal(render_corrupted(P, Corruption(), None), render_clean(P))


def test_attribute_corruptions() -> None:
    rng = np.random.default_rng(0)
    red, blue = np.array(PALETTE["red"]), np.array(PALETTE["blue"])
    img = render_corrupted(P, Corruption(wrong_colour=True), rng)
    assert not (np.abs(img.astype(int) - red).sum(-1) < 30).any()  # no red pixel left
    img = render_corrupted(P, Corruption(wrong_background=True), rng)
    assert not (np.abs(img[0].astype(int) - blue).sum(-1) < 30).any()
    # 2 - 2 = 0 would be empty, so it mirrors to 2 + 2 = 4; 2 + 5 is capped at 4
    assert (
        _components(
            render_corrupted(ToyPrompt(1, "red", "circle", "blue"), Corruption(count_delta=-1), rng), PALETTE["blue"]
        )
        == 2
    )
    for delta, want in [(-1, 1), (1, 3), (-2, 4), (5, 4), (-3, 4)]:
        img = render_corrupted(P, Corruption(count_delta=delta), rng)
        assert _components(img, PALETTE["blue"]) == want
    a = render_corrupted(P, Corruption(wrong_shape=True), None)
    assert not np.array_equal(a, render_clean(P))


def test_continuous_corruptions_change_pixels() -> None:
    clean = render_clean(P).astype(float)
    blurred = render_corrupted(P, Corruption(blur=1.0), None).astype(float)
    # blur lowers total gradient energy
    assert np.abs(np.diff(blurred, axis=1)).sum() < np.abs(np.diff(clean, axis=1)).sum()
    noisy = render_corrupted(P, Corruption(noise=0.1), np.random.default_rng(0)).astype(float)
    assert 10 < np.std(noisy[0] - clean[0]) < 40  # std 0.1 * 255 = 25.5 on the background row
    shifted = render_corrupted(P, Corruption(off_centre=0.2), np.random.default_rng(3))
    assert not np.array_equal(shifted, render_clean(P, np.random.default_rng(3)))


def test_random_corruption_levels() -> None:
    rng = np.random.default_rng(0)
    assert all(random_corruption(rng, 0.0) == Corruption() for _ in range(20))
    heavy = [random_corruption(rng, 1.0) for _ in range(300)]
    light = [random_corruption(rng, 0.2) for _ in range(300)]
    frac = lambda cs, f: np.mean([f(c) for c in cs])  # noqa: E731
    assert frac(heavy, lambda c: c.wrong_colour) > frac(light, lambda c: c.wrong_colour)
    assert frac(heavy, lambda c: c.count_delta != 0) > frac(light, lambda c: c.count_delta != 0)
    assert frac(heavy, lambda c: c.blur) > frac(light, lambda c: c.blur)
    assert frac(heavy, lambda c: c.noise) > frac(light, lambda c: c.noise)
    with pytest.raises(ValueError):
        random_corruption(rng, 1.5)


def test_png_round_trip() -> None:
    for seed in range(5):
        img = render_web(P, np.random.default_rng(seed))
        data = to_png_bytes(img)
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert np.array_equal(from_png_bytes(data), img)
        assert to_png_bytes(img) == data  # deterministic bytes


@pytest.mark.parametrize("data", [b"", b"not an image", to_png_bytes(render_clean(P))[:40]])
def test_corrupt_bytes(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a readable image"):
        from_png_bytes(data)


def test_to_png_rejects_bad_arrays() -> None:
    with pytest.raises(ValueError):
        to_png_bytes(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError):
        to_png_bytes(np.zeros((4, 4, 3), dtype=np.float32))


def test_fast_paths_match_reference() -> None:
    """The windowed coverage equals the full-grid one, and the matrix blur equals
    scipy.ndimage.gaussian_filter(mode="nearest") to float precision."""
    from scipy import ndimage

    from refbench.toy.render import _blur, _coverage_sum, shape_coverage

    rng = np.random.default_rng(0)
    for shape in ("circle", "square", "triangle"):
        for _ in range(20):
            c = rng.uniform(-2, 18, size=(3, 2))  # includes objects partly outside
            assert np.allclose(_coverage_sum(shape, c, 16), shape_coverage(shape, c, 16).sum(0))
    img = rng.random((16, 16, 3))
    for sigma in (0.3, 0.8, 1.5, 3.0):
        ref = ndimage.gaussian_filter(img, sigma=(sigma, sigma, 0), mode="nearest")
        assert np.abs(_blur(img, sigma) - ref).max() < 1e-12
