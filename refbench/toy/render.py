"""Numpy renderer of the toy world: correct images and "web-like" corrupted ones.

Images are ``np.uint8`` arrays of shape (size, size, 3). Geometry is defined in
fractions of the image size, so 16 px (the default) and e.g. 32 px look alike.
Objects are drawn with 4x4 supersampling: edges are anti-aliased like the
outputs of a diffusion model, and a 5 px circle still looks different from a
5 px square.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .prompts import BACKGROUNDS, COLOURS, PALETTE, SHAPES, ToyPrompt

IMAGE_SIZE = 16
MAX_OBJECTS = 4  # layouts exist for 0..4 objects; count corruptions are clipped to this
_SS = 4  # supersampling factor per axis

# Half extents in fractions of the image size (2.5 / 2.2 / 2.8 px at 16 px). The
# triangle is larger so that the three shapes have similar areas (~20/19/16 px^2).
SHAPE_HALF: dict[str, float] = {"circle": 2.5 / 16, "square": 2.2 / 16, "triangle": 2.8 / 16}

# Canonical centres (y, x) as fractions of size. Neighbours are 7.5 px apart at
# 16 px, leaving a >= 1.9 px gap even with the largest shape and full jitter, so
# objects stay separate connected components.
_H = 3.75 / 16
_V = 3.25 / 16
LAYOUTS: dict[int, tuple[tuple[float, float], ...]] = {
    0: (),
    1: ((0.5, 0.5),),
    2: ((0.5, 0.5 - _H), (0.5, 0.5 + _H)),
    3: ((0.5 - _V, 0.5 - _H), (0.5 - _V, 0.5 + _H), (0.5 + _V, 0.5)),
    4: ((0.5 - _H, 0.5 - _H), (0.5 - _H, 0.5 + _H), (0.5 + _H, 0.5 - _H), (0.5 + _H, 0.5 + _H)),
}
_GLOBAL_JITTER = 1.0 / 16  # whole layout moves by up to 1 px per axis
_OBJECT_JITTER = 0.3 / 16  # each object moves by up to 0.3 px per axis


@dataclass(frozen=True)
class Corruption:
    """What goes wrong in a web-like image. Defaults mean no corruption."""

    wrong_colour: bool = False  # objects drawn in another palette colour
    wrong_shape: bool = False  # objects drawn as another shape
    count_delta: int = 0  # objects missing (<0) or extra (>0); see render_corrupted
    wrong_background: bool = False  # background filled with another background colour
    blur: float = 0.0  # gaussian sigma in pixels
    noise: float = 0.0  # std of additive gaussian pixel noise, 0-1 scale
    off_centre: float = 0.0  # layout shift as a fraction of the image size
    colour_shift: float = 0.0  # object RGB moved by this norm (0-1 scale), random direction

    @property
    def is_clean(self) -> bool:
        return self == Corruption()


def rgb(name: str) -> np.ndarray:
    """Palette colour as float RGB in [0, 1]."""
    return np.asarray(PALETTE[name], dtype=np.float64) / 255.0


_GRID_CACHE: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _subpixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) coordinates in pixel units of the supersampled points."""
    if size not in _GRID_CACHE:
        c = (np.arange(size * _SS) + 0.5) / _SS
        _GRID_CACHE[size] = (c[:, None], c[None, :])
    return _GRID_CACHE[size]


def _inside(shape: str, dy: np.ndarray, dx: np.ndarray, half: float) -> np.ndarray:
    if shape == "circle":
        return dy * dy + dx * dx <= half * half
    if shape == "square":
        return np.maximum(np.abs(dy), np.abs(dx)) <= half
    if shape == "triangle":  # apex up, base at the bottom, base width = height = 2 * half
        return (np.abs(dy) <= half) & (np.abs(dx) <= (dy + half) / 2)
    raise ValueError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")


def shape_coverage(shape: str, centres_px: np.ndarray, size: int, half_px: float | None = None) -> np.ndarray:
    """Anti-aliased coverage in [0, 1], shape (k, size, size), one map per centre.

    ``centres_px`` is (k, 2) of (y, x) in pixel units (pixel i spans [i, i+1)).
    Used by the oracle's shape templates; the renderer uses the windowed twin below.
    """
    half = SHAPE_HALF[shape] * size if half_px is None else half_px
    yy, xx = _subpixel_grid(size)
    dy = yy[None] - centres_px[:, 0, None, None]
    dx = xx[None] - centres_px[:, 1, None, None]
    k = centres_px.shape[0]
    return _inside(shape, dy, dx, half).reshape(k, size, _SS, size, _SS).mean(axis=(2, 4))


def _coverage_sum(shape: str, centres_px: np.ndarray, size: int) -> np.ndarray:
    """Sum of the objects' coverage, (size, size); same samples as ``shape_coverage``
    but evaluated only in a small window around each object (4x fewer points)."""
    half = SHAPE_HALF[shape] * size
    win = int(np.ceil(2 * half)) + 2
    sub = (np.arange(win * _SS) + 0.5) / _SS
    k = centres_px.shape[0]
    y0 = np.floor(centres_px[:, 0] - win / 2).astype(int)
    x0 = np.floor(centres_px[:, 1] - win / 2).astype(int)
    dy = (y0[:, None] + sub[None] - centres_px[:, 0, None])[:, :, None]
    dx = (x0[:, None] + sub[None] - centres_px[:, 1, None])[:, None, :]
    stamps = _inside(shape, dy, dx, half).reshape(k, win, _SS, win, _SS).mean(axis=(2, 4))
    out = np.zeros((size + 2 * win, size + 2 * win))  # margin: objects may leave the frame
    for j in range(k):
        ys, xs = y0[j] + win, x0[j] + win
        if 0 <= ys <= size + win and 0 <= xs <= size + win:
            out[ys : ys + win, xs : xs + win] += stamps[j]
    return out[win : win + size, win : win + size]


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of (H, W, C) as two small matrix products; equals
    scipy.ndimage.gaussian_filter(mode="nearest", truncate=4) but ~10x faster here."""
    size_y, size_x = img.shape[:2]
    radius = int(4.0 * sigma + 0.5)
    t = np.arange(-radius, radius + 1)
    ker = np.exp(-0.5 * (t / sigma) ** 2)
    ker /= ker.sum()

    def matrix(n: int) -> np.ndarray:
        rows = np.arange(n)[:, None]
        cols = np.minimum(np.maximum(rows + t[None], 0), n - 1)  # "nearest" edge mode
        flat = (rows * n + cols).ravel()
        return np.bincount(flat, weights=np.tile(ker, n), minlength=n * n).reshape(n, n)

    out = (matrix(size_y) @ img.reshape(size_y, -1)).reshape(img.shape)  # along y
    return matrix(size_x)[None] @ out  # along x, batched over rows


def _layout(count: int, rng: np.random.Generator | None) -> np.ndarray:
    """Object centres as fractions of the size, (count, 2)."""
    centres = np.asarray(LAYOUTS[count], dtype=np.float64).reshape(count, 2)
    if rng is not None:
        # Always draw the same numbers so that the stream does not depend on count.
        g = rng.uniform(-_GLOBAL_JITTER, _GLOBAL_JITTER, size=2)
        o = rng.uniform(-_OBJECT_JITTER, _OBJECT_JITTER, size=(MAX_OBJECTS, 2))
        centres = centres + g + o[:count]
    return centres


def _draw(centres: np.ndarray, colour: np.ndarray, shape: str, background: np.ndarray, size: int) -> np.ndarray:
    """Float image in [0, 1], (size, size, 3); ``centres`` in fractions of size."""
    img = np.broadcast_to(background, (size, size, 3)).copy()
    if len(centres):
        cov = np.minimum(_coverage_sum(shape, centres * size, size), 1.0)[..., None]
        img = img * (1.0 - cov) + colour * cov
    return img


def _quantise(img: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(np.rint(img * 255.0), 0), 255).astype(np.uint8)


def render_clean(prompt: ToyPrompt, rng: np.random.Generator | None = None, size: int = IMAGE_SIZE) -> np.ndarray:
    """The correct image for ``prompt``; rng=None gives the canonical layout."""
    centres = _layout(prompt.count, rng)
    img = _draw(centres, rgb(prompt.colour), prompt.shape, rgb(prompt.background), size)
    return _quantise(img)


def render_corrupted(
    prompt: ToyPrompt,
    corruption: Corruption,
    rng: np.random.Generator | None,
    size: int = IMAGE_SIZE,
) -> np.ndarray:
    """Image of ``prompt`` with ``corruption`` applied; deterministic given rng state.

    The drawn count is count + count_delta, mirrored to count - count_delta if
    that would leave no object, and capped at MAX_OBJECTS; so a nonzero delta
    always changes the count and never empties the image.

    rng=None: canonical layout, first valid alternative colour/shape/background,
    and a fixed noise seed.
    """
    count = prompt.count + corruption.count_delta
    if count < 1:  # mirror: never an empty image; "one circle" minus one becomes two
        count = prompt.count - corruption.count_delta
    count = min(count, MAX_OBJECTS)
    # Layout first, so that Corruption() with a given rng state reproduces render_clean.
    centres = _layout(count, rng)
    layout_rng = rng
    rng = rng if rng is not None else np.random.default_rng(0)
    # Fixed number of draws in a fixed order, whatever the corruption flags.
    u = rng.random(5)
    colour_name, shape, bg_name = prompt.colour, prompt.shape, prompt.background
    if corruption.wrong_colour:
        alts = [c for c in COLOURS if c not in (prompt.colour, prompt.background)]
        colour_name = alts[int(u[0] * len(alts)) if layout_rng is not None else 0]
    if corruption.wrong_shape:
        alts = [s for s in SHAPES if s != prompt.shape]
        shape = alts[int(u[1] * len(alts)) if layout_rng is not None else 0]
    if corruption.wrong_background:
        alts = [b for b in BACKGROUNDS if b not in (prompt.background, colour_name)]
        bg_name = alts[int(u[2] * len(alts)) if layout_rng is not None else 0]
    angle = 2 * np.pi * u[3]
    shift = corruption.off_centre * np.array([np.sin(angle), np.cos(angle)])
    colour = rgb(colour_name)
    if corruption.colour_shift > 0:
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction) + 1e-12
        colour = np.minimum(np.maximum(colour + corruption.colour_shift * direction, 0.0), 1.0)
    img = _draw(centres + shift, colour, shape, rgb(bg_name), size)
    if corruption.blur > 0:
        img = _blur(img, corruption.blur)
    if corruption.noise > 0:
        img = img + rng.normal(0.0, corruption.noise, size=img.shape)
    return _quantise(img)


def random_corruption(rng: np.random.Generator, level: float) -> Corruption:
    """A random corruption whose severity grows with ``level`` in [0, 1].

    Each discrete attribute is wrong with probability 0.6 * level (background:
    0.4 * level); continuous degradations are level * max * U(0.5, 1) with max
    blur 1.2 px, noise 0.10, off-centre 0.25 of the size, colour shift 0.2.
    level 0 gives ``Corruption()`` exactly.
    """
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"level must be in [0, 1], got {level}")
    u = rng.random(11)  # fixed number of draws: stream independent of outcomes
    p_attr, p_bg = 0.6 * level, 0.4 * level
    count_delta = 0
    if u[2] < p_attr:
        count_delta = (2 if u[3] < 0.3 * level else 1) * (1 if u[4] < 0.5 else -1)
    s = 0.5 + 0.5 * u[6:11]
    return Corruption(
        wrong_colour=bool(u[0] < p_attr),
        wrong_shape=bool(u[1] < p_attr),
        count_delta=count_delta,
        wrong_background=bool(u[5] < p_bg),
        blur=float(1.2 * level * s[0]),
        noise=float(0.10 * level * s[1]),
        off_centre=float(0.25 * level * s[2]),
        colour_shift=float(0.2 * level * s[3]),
    )


# Beta(2, 2.5): mean 0.44, most mass in 0.2-0.7 -> mostly moderately corrupted.
WEB_LEVEL_BETA = (2.0, 2.5)


def render_web(
    prompt: ToyPrompt,
    rng: np.random.Generator,
    level: float | None = None,
    size: int = IMAGE_SIZE,
) -> np.ndarray:
    """A web-like training image: random corruption at ``level`` (default: random)."""
    if level is None:
        level = float(rng.beta(*WEB_LEVEL_BETA))
    return render_corrupted(prompt, random_corruption(rng, level), rng, size=size)


def to_png_bytes(image: np.ndarray) -> bytes:
    """Lossless PNG encoding of a (H, W, 3) uint8 image."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {arr.dtype} {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def from_png_bytes(data: bytes) -> np.ndarray:
    """Decode image bytes (PNG, or any format PIL reads) to (H, W, 3) uint8."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return np.array(img.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # PIL raises several types for truncated/garbage input
        raise ValueError(f"bytes are not a readable image ({type(exc).__name__}: {exc})") from None
