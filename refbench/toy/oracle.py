"""Oracle reward models of the toy world, computed from pixels.

Importing this module registers six metrics in ``refbench.evaluation.metrics``:
``colour``, ``count``, ``shape`` (prompt adherence), ``background`` (adherence),
``aesthetic`` (prompt-independent: sharpness x contrast x low noise) and
``human`` (the hidden "human" reward that labels toy Pick-a-Pic pairs):

    human = 0.25 colour + 0.20 count + 0.20 shape + 0.10 background
          + 0.20 aesthetic + 0.05 composition          (all terms in [0, 1])

where composition = exp(-off^2 / (2 * 0.1^2)), off = distance of the foreground
centroid from the image centre as a fraction of the size.

Pipeline (vectorised over the batch, one ``ndimage.label`` call per chunk):
1. background b = per-channel median of the border pixels (robust to blur/noise);
2. a lightly smoothed copy (sigma 0.6 px) suppresses pixel noise; d = |x - b|;
   d_ref = 97th percentile of d (the object-vs-background contrast);
   soft foreground w = clip(d / d_ref, 0, 1), hard mask d > d_ref / 2;
3. connected components (>= a quarter of an object's area) give the count and,
   by soft-IoU against smoothed shape templates placed at each component's
   centroid, the shape; colours are judged along the segment b -> target colour,
   so anti-aliased or blurred edge pixels do not count as wrong colours;
4. aesthetic = sharpness * (1 - exp(-d_ref / 0.25)) * exp(-noise_sigma / 0.03), with
   sharpness = mean of the size/2 largest neighbour differences / contrast (<= 1)
   and noise_sigma from Immerkaer's kernel (robust 20th percentile).
Count and shape mix a discrete term with a continuous one, so ties are rare.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

from ..evaluation.metrics import register_metric
from .prompts import PALETTE, SHAPES, parse_prompt
from .render import SHAPE_HALF, shape_coverage

HUMAN_WEIGHTS: dict[str, float] = {
    "colour": 0.25,
    "count": 0.20,
    "shape": 0.20,
    "background": 0.10,
    "aesthetic": 0.20,
    "composition": 0.05,
}
SMOOTH_SIGMA = 0.6  # px; denoises segmentation without merging objects (gaps >= 1.9 px)
MIN_CONTRAST = 0.12  # d_ref below this: nothing is drawn (empty image)
SHAPE_BETA = 40.0  # softmax temperature over template IoUs
_Q = 4  # template sub-pixel offsets per axis
# Extra template blurs (px): a component is compared with each shape at the blur
# that fits it best, so blurred triangles are not mistaken for circles.
TEMPLATE_BLURS: tuple[float, ...] = (0.0, 0.5, 0.9, 1.3)
_CHUNK = 512  # images per vectorised chunk (memory bound)


@lru_cache(maxsize=8)
def _templates(size: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Smoothed shape templates: (R, T of shape (S, B, Q, Q, 2R+1, 2R+1), areas (S,)).

    Template (s, qy, qx) has its centroid at window pixel coordinate
    (R + qy/Q, R + qx/Q), i.e. at the same place as a component centroid whose
    fractional part is (qy/Q, qx/Q) in a window starting at floor(centroid) - R.
    """
    r = int(np.ceil(0.25 * size))
    k = 2 * r + 1
    out = np.zeros((len(SHAPES), len(TEMPLATE_BLURS), _Q, _Q, k, k))
    areas = np.zeros(len(SHAPES))
    for si, shape in enumerate(SHAPES):
        half = SHAPE_HALF[shape] * size
        dy = half / 3 if shape == "triangle" else 0.0  # triangle centroid sits 1/3 below its box centre
        centres = np.array([[r + qy / _Q - dy, r + qx / _Q] for qy in range(_Q) for qx in range(_Q)])
        cov = shape_coverage(shape, centres, k, half_px=half)
        areas[si] = cov[0].sum()
        for bi, blur in enumerate(TEMPLATE_BLURS):
            sig = float(np.hypot(SMOOTH_SIGMA, blur))
            t = ndimage.gaussian_filter(cov, sigma=(0, sig, sig), mode="constant")
            # normalise like w = d / d_ref: the peak of a blurred object reads as 1
            t = np.clip(t / np.percentile(t, 97, axis=(1, 2), keepdims=True) if blur else t, 0, 1)
            out[si, bi] = t.reshape(_Q, _Q, k, k)
    return r, out, areas


# 4-connectivity inside each image, none across the batch axis: one label() call per chunk
_STRUCT = np.zeros((3, 3, 3), bool)
_STRUCT[1] = ndimage.generate_binary_structure(2, 1)


def _count_and_shape(
    mask: np.ndarray, w: np.ndarray, shape_idx: np.ndarray, min_area: float
) -> tuple[np.ndarray, np.ndarray]:
    """Components per image and mean P(prompt shape) over them, vectorised over the batch."""
    n, size = mask.shape[:2]
    labels, nlab = ndimage.label(mask, structure=_STRUCT)
    if nlab == 0:
        return np.zeros(n), np.zeros(n)
    idx = labels.ravel()
    img, yy, xx = np.indices(mask.shape)
    sizes = np.bincount(idx, minlength=nlab + 1)
    ww = np.bincount(idx, weights=w.ravel(), minlength=nlab + 1) + 1e-12
    owner = np.rint(np.bincount(idx, weights=img.ravel(), minlength=nlab + 1) / np.maximum(sizes, 1)).astype(int)
    cy = np.bincount(idx, weights=(w * (yy + 0.5)).ravel(), minlength=nlab + 1) / ww
    cx = np.bincount(idx, weights=(w * (xx + 0.5)).ravel(), minlength=nlab + 1) / ww
    keep = np.nonzero(sizes >= min_area)[0]
    keep = keep[keep > 0]
    n_comp = np.bincount(owner[keep], minlength=n).astype(float)
    if not len(keep):
        return n_comp, np.zeros(n)

    r, templates, _ = _templates(size)
    k = 2 * r + 1
    # each component sees its own pixels (plus a 1 px rim) and background not next to another one
    grown = ndimage.grey_dilation(labels, size=(1, 3, 3))
    own_lab = np.where(labels > 0, labels, grown)
    near = ndimage.grey_dilation(labels, size=(1, 5, 5))
    pad = ((0, 0), (r, r), (r, r))
    wpad, lpad, npad = np.pad(w, pad), np.pad(own_lab, pad), np.pad(near, pad)
    iy = np.clip(np.floor(cy[keep]).astype(int), 0, size - 1)
    ix = np.clip(np.floor(cx[keep]).astype(int), 0, size - 1)
    qy = np.clip(np.rint((cy[keep] - iy) * _Q).astype(int), 0, _Q - 1)
    qx = np.clip(np.rint((cx[keep] - ix) * _Q).astype(int), 0, _Q - 1)
    rows = (iy[:, None] + np.arange(k))[:, :, None]
    cols = (ix[:, None] + np.arange(k))[:, None, :]
    im = owner[keep][:, None, None]
    lab = keep[:, None, None]
    lw, nw = lpad[im, rows, cols], npad[im, rows, cols]
    own = (lw == lab) | ((lw == 0) & (nw == 0)) | (nw == lab)
    win = (wpad[im, rows, cols] * own)[:, None, None]  # (M, 1, 1, k, k)
    tpl = np.moveaxis(templates[:, :, qy, qx], 2, 0)  # (M, S, B, k, k)
    iou = np.minimum(win, tpl).sum((3, 4)) / (np.maximum(win, tpl).sum((3, 4)) + 1e-9)
    iou = iou.max(2)  # best-fitting blur per shape
    z = np.exp(SHAPE_BETA * (iou - iou.max(1, keepdims=True)))
    p_true = z[np.arange(len(keep)), shape_idx[owner[keep]]] / z.sum(1)
    shape_score = np.bincount(owner[keep], weights=p_true, minlength=n) / np.maximum(n_comp, 1)
    return n_comp, shape_score


def _analyse_chunk(images: np.ndarray, prompts: list[str]) -> dict[str, np.ndarray]:
    n, size = images.shape[0], images.shape[1]
    parsed = [parse_prompt(p) for p in prompts]
    target = np.array([PALETTE[p.colour] for p in parsed], float) / 255.0
    target_bg = np.array([PALETTE[p.background] for p in parsed], float) / 255.0
    k_true = np.array([p.count for p in parsed], float)
    shape_idx = np.array([SHAPES.index(p.shape) for p in parsed])

    x = images.astype(np.float64) / 255.0
    border = np.concatenate([x[:, 0], x[:, -1], x[:, 1:-1, 0], x[:, 1:-1, -1]], axis=1)
    bg = np.median(border, axis=1)  # (n, 3)
    xs = ndimage.gaussian_filter(x, sigma=(0, SMOOTH_SIGMA, SMOOTH_SIGMA, 0), mode="nearest")
    d = np.linalg.norm(xs - bg[:, None, None], axis=-1)
    d_ref = np.percentile(d.reshape(n, -1), 97, axis=1)
    present = np.clip((d_ref - 0.08) / (MIN_CONTRAST + 0.05 - 0.08), 0, 1)  # soft "something drawn"
    d_eff = np.maximum(d_ref, MIN_CONTRAST)[:, None, None]
    w = np.clip(d / d_eff, 0, 1)
    fg = d > 0.25 * d_eff  # excludes background noise from soft sums
    mask = (d > 0.5 * d_eff) & (d_ref >= MIN_CONTRAST)[:, None, None]
    wf = w * fg
    _, _, areas = _templates(size)
    unit_area = float(areas.mean())

    # --- colour: pixels near the segment background -> target colour, and the core colour
    seg = target - bg
    t = np.clip(
        np.einsum("nhwc,nc->nhw", xs - bg[:, None, None], seg) / np.maximum((seg**2).sum(1), 1e-6)[:, None, None], 0, 1
    )
    resid = np.linalg.norm(xs - (bg[:, None, None] + t[..., None] * seg[:, None, None]), axis=-1)
    om = wf**2
    seg_term = (om * np.exp(-(resid**2) / (2 * 0.12**2))).sum((1, 2)) / (om.sum((1, 2)) + 1e-9)
    core_w = wf**4
    core = np.einsum("nhw,nhwc->nc", core_w, xs) / (core_w.sum((1, 2))[:, None] + 1e-9)
    core_term = np.exp(-((core - target) ** 2).sum(1) / (2 * 0.2**2))
    colour = present * (0.6 * seg_term + 0.4 * core_term)

    # --- background and composition
    background = np.exp(-((bg - target_bg) ** 2).sum(1) / (2 * 0.1**2))
    yy = np.arange(size) + 0.5
    mass = wf.sum((1, 2)) + 1e-9
    cy = (wf.sum(2) * yy).sum(1) / mass
    cx = (wf.sum(1) * yy).sum(1) / mass
    off = np.hypot(cy - size / 2, cx - size / 2) / size
    composition = present * np.exp(-(off**2) / (2 * 0.1**2))

    # --- count and shape from connected components
    n_comp, shape_score = _count_and_shape(mask, w, shape_idx, 0.25 * unit_area)
    soft_count = wf.sum((1, 2)) / areas[shape_idx]
    count = 0.8 * np.exp(-np.abs(n_comp - k_true)) + 0.2 * np.exp(-np.abs(soft_count - k_true))

    # --- aesthetic: sharpness x contrast x low noise (prompt-independent)
    gx = np.linalg.norm(np.diff(x, axis=2), axis=-1).reshape(n, -1)
    gy = np.linalg.norm(np.diff(x, axis=1), axis=-1).reshape(n, -1)
    g = np.concatenate([gx, gy], axis=1)
    top = -np.partition(-g, size // 2, axis=1)[:, : size // 2].mean(1)
    contrast_raw = np.linalg.norm(core - bg, axis=1)
    sharp = np.clip(top / np.maximum(contrast_raw, 0.1), 0, 1)
    # Immerkaer's noise kernel (L2 norm 6); 20th percentile of |response| is robust
    # to the edge pixels; for gaussian noise that percentile is 0.2533 sigma * 6.
    lap = (
        x[:, :-2, :-2]
        + x[:, :-2, 2:]
        + x[:, 2:, :-2]
        + x[:, 2:, 2:]
        - 2 * (x[:, 1:-1, :-2] + x[:, 1:-1, 2:] + x[:, :-2, 1:-1] + x[:, 2:, 1:-1])
        + 4 * x[:, 1:-1, 1:-1]
    )
    noise = np.percentile(np.abs(lap).reshape(n, -1, 3), 20, axis=1).mean(1) / (6 * 0.2533)
    aesthetic = sharp * (1 - np.exp(-d_ref / 0.25)) * np.exp(-noise / 0.03)

    return {
        "colour": colour,
        "count": count,
        "shape": shape_score,
        "background": background,
        "aesthetic": aesthetic,
        "composition": composition,
        "n_components": n_comp,
    }


def analyse(images: np.ndarray, prompts: list[str]) -> dict[str, np.ndarray]:
    """All oracle sub-scores (and the ``human`` mix) for a batch, in chunks."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 (N, H, W, 3) images, got {images.dtype} {images.shape}")
    if len(prompts) != len(images):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    parts = [
        _analyse_chunk(images[s : s + _CHUNK], list(prompts[s : s + _CHUNK])) for s in range(0, len(images), _CHUNK)
    ]
    if not parts:
        return {k: np.zeros(0) for k in [*HUMAN_WEIGHTS, "n_components", "human"]}
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    out["human"] = sum(wt * out[k] for k, wt in HUMAN_WEIGHTS.items())
    return out


def _metric(key: str):
    def fn(images: np.ndarray, prompts: list[str]) -> np.ndarray:
        return analyse(images, prompts)[key]

    fn.__name__ = f"oracle_{key}"
    return fn


_DESCRIPTIONS = {
    "colour": "object colour adherence: foreground pixels on the background->target colour segment, and core colour",
    "count": "object count adherence: 0.8 exp(-|components - count|) + 0.2 exp(-|area / object area - count|)",
    "shape": "shape adherence: softmax over soft-IoU with smoothed shape templates, mean over components",
    "background": "background adherence: border-median colour vs the prompt background colour",
    "aesthetic": "prompt-independent quality: sharpness x contrast x low noise",
    "human": "hidden human reward: 0.25 colour + 0.2 count + 0.2 shape + 0.1 background + 0.2 aesthetic + 0.05 composition",
}
for _key, _desc in _DESCRIPTIONS.items():
    register_metric(_key, kind="oracle", description=_desc)(_metric(_key))
