"""Pure colour work: display values, smoothing, clipping, colormaps, class maps, compositing.

Arrays in, arrays out; images are ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA ``uint8``. Off tissue
and where nothing was scored a heatmap is fully transparent (alpha 0), so a viewer sees the
slide there, never a colour that means "score 0".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from engine.post.compute import zscore_over_tissue

RGB = tuple[int, int, int]

TRUTH_RGB: RGB = (0, 200, 60)
"""Ground truth: fill and outline."""
PREDICTED_RGB: RGB = (0, 230, 255)
"""Predicted regions (post threshold and morphology): outline."""
Z_DEFAULT_RANGE = (-3.0, 3.0)
RAW_DEFAULT_RANGE = (0.0, 1.0)


def smooth_nan(values: ArrayLike, sigma_px: float) -> NDArray[np.float32]:
    """Gaussian smoothing that ignores NaN: normalised convolution over the finite pixels.

    Pixels that were NaN stay NaN, so smoothing never spreads scores onto glass or unscored
    tissue; near such pixels the kernel is renormalised over the finite neighbours.
    """
    v = np.asarray(values, dtype=np.float64)
    if sigma_px <= 0:
        return v.astype(np.float32)
    finite = np.isfinite(v)
    weights = ndimage.gaussian_filter(finite.astype(np.float64), sigma_px, mode="constant")
    total = ndimage.gaussian_filter(np.where(finite, v, 0.0), sigma_px, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(finite & (weights > 1e-12), total / weights, np.nan)
    return out.astype(np.float32)


def display_values(
    scores: ArrayLike, tissue: ArrayLike, *, zscore: bool = False, smooth_sigma_px: float = 0.0
) -> NDArray[np.float32]:
    """The values a heatmap shows: scores on tissue (NaN elsewhere), optionally z-scored, smoothed.

    The z-score's mean and std are those of the slide's scored tissue
    (:func:`engine.post.compute.zscore_over_tissue`), computed before smoothing.
    """
    s = np.asarray(scores, dtype=np.float32)
    t = np.asarray(tissue).astype(bool)
    if zscore:
        values = zscore_over_tissue(s, t)
    else:
        values = np.where(t & np.isfinite(s), s, np.nan).astype(np.float32)
    return smooth_nan(values, smooth_sigma_px)


def display_range(
    values: ArrayLike,
    *,
    zscore: bool = False,
    clip_percentiles: tuple[float, float] | None = None,
    value_range: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """The colormap's ``(low, high)``: ``value_range``, else percentiles of the finite values,
    else 0..1 for raw scores and -3..3 for z-scores. Never returns ``low == high``."""
    if value_range is not None:
        low, high = float(value_range[0]), float(value_range[1])
    else:
        low, high = Z_DEFAULT_RANGE if zscore else RAW_DEFAULT_RANGE
        v = np.asarray(values, dtype=np.float64)
        finite = v[np.isfinite(v)]
        if clip_percentiles is not None and finite.size:
            low, high = (float(p) for p in np.percentile(finite, clip_percentiles))
    if not high > low:
        low, high = low - 0.5, low + 0.5  # a constant map: show it mid-scale
    return low, high


def colormap_lut(name: str, n: int = 256) -> NDArray[np.uint8]:
    """``(n, 3)`` RGB lookup table of a matplotlib colormap."""
    import matplotlib

    cmap = matplotlib.colormaps[name].resampled(n)
    lut = cmap(np.linspace(0.0, 1.0, n))[:, :3]
    return np.round(lut * 255).astype(np.uint8)


def colourise(
    values: ArrayLike,
    low: float,
    high: float,
    colormap: str = "viridis",
    *,
    valid: ArrayLike | None = None,
) -> NDArray[np.uint8]:
    """RGBA heatmap of ``values`` clipped to ``[low, high]``; alpha 0 where NaN or not ``valid``."""
    v = np.asarray(values, dtype=np.float64)
    show = np.isfinite(v)
    if valid is not None:
        show &= np.asarray(valid).astype(bool)
    lut = colormap_lut(colormap)
    with np.errstate(invalid="ignore"):
        scaled = np.clip((v - low) / (high - low), 0.0, 1.0)
    index = np.where(show, np.round(scaled * (len(lut) - 1)), 0).astype(np.intp)
    rgba = np.zeros(v.shape + (4,), dtype=np.uint8)
    rgba[..., :3] = lut[index]
    rgba[..., 3] = np.where(show, 255, 0)
    rgba[~show, :3] = 0
    return rgba


def alpha_by_value(
    rgba: ArrayLike, values: ArrayLike, low: float, high: float
) -> NDArray[np.uint8]:
    """``rgba`` with its alpha scaled by where each value lies in ``[low, high]`` (0 at low, 1 at high).

    Over the slide, low scores then let the tissue show through and high scores stand out.
    """
    out = np.array(rgba, dtype=np.uint8, copy=True)
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        scaled = np.nan_to_num(np.clip((v - low) / (high - low), 0.0, 1.0), nan=0.0)
    out[..., 3] = np.round(out[..., 3].astype(np.float64) * scaled).astype(np.uint8)
    return out


def class_palette(n: int) -> list[RGB]:
    """``n`` distinct colours for classes (matplotlib's tab10, then tab20)."""
    import matplotlib

    name = "tab10" if n <= 10 else "tab20"
    colours = matplotlib.colormaps[name].colors  # type: ignore[attr-defined]
    return [tuple(int(round(c * 255)) for c in colours[i % len(colours)][:3]) for i in range(n)]  # type: ignore[misc]


def class_map(probabilities: ArrayLike, valid: ArrayLike | None = None) -> NDArray[np.int16]:
    """Most likely class per pixel of a ``(C, H, W)`` map; -1 where any channel is NaN or not valid."""
    p = np.asarray(probabilities, dtype=np.float32)
    if p.ndim != 3:
        raise ValueError(f"probabilities must be (C, H, W), got shape {p.shape}")
    scored = np.all(np.isfinite(p), axis=0)
    if valid is not None:
        scored &= np.asarray(valid).astype(bool)
    labels = np.argmax(np.where(np.isfinite(p), p, -np.inf), axis=0).astype(np.int16)
    labels[~scored] = -1
    return labels


def class_map_rgba(labels: ArrayLike, colours: Sequence[RGB]) -> NDArray[np.uint8]:
    """RGBA image of a class map (``-1`` = transparent)."""
    lab = np.asarray(labels)
    rgba = np.zeros(lab.shape + (4,), dtype=np.uint8)
    for index, colour in enumerate(colours):
        on = lab == index
        rgba[on, :3] = colour
        rgba[on, 3] = 255
    return rgba


def composite(
    base_rgb: ArrayLike, overlay_rgba: ArrayLike, opacity: float = 1.0
) -> NDArray[np.uint8]:
    """``overlay_rgba`` drawn over ``base_rgb`` with its alpha times ``opacity``."""
    base = np.asarray(base_rgb, dtype=np.float32)
    over = np.asarray(overlay_rgba, dtype=np.float32)
    if base.shape[:2] != over.shape[:2]:
        raise ValueError(f"base is {base.shape[:2]}, overlay {over.shape[:2]}")
    alpha = over[..., 3:4] / 255.0 * float(opacity)
    out = base * (1 - alpha) + over[..., :3] * alpha
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def tint(base_rgb: ArrayLike, mask: ArrayLike, colour: RGB, opacity: float) -> NDArray[np.uint8]:
    """``base_rgb`` with ``colour`` blended in at ``opacity`` where ``mask`` is true."""
    m = np.asarray(mask).astype(bool)
    rgba = np.zeros(m.shape + (4,), dtype=np.uint8)
    rgba[m, :3] = colour
    rgba[m, 3] = 255
    return composite(base_rgb, rgba, opacity)


def outline(mask: ArrayLike, width_px: int = 1) -> NDArray[np.bool_]:
    """The inner boundary of ``mask``, ``width_px`` pixels wide (8-connected erosion)."""
    m = np.asarray(mask).astype(bool)
    if width_px < 1 or not m.any():
        return np.zeros(m.shape, dtype=bool)
    eroded = ndimage.binary_erosion(
        m, structure=np.ones((3, 3), bool), iterations=width_px, border_value=0
    )
    return m & ~eroded


def draw_outline(
    base_rgb: ArrayLike, mask: ArrayLike, colour: RGB, width_px: int = 1
) -> NDArray[np.uint8]:
    """``base_rgb`` with the boundary of ``mask`` drawn in ``colour``."""
    out = np.array(base_rgb, dtype=np.uint8, copy=True)
    out[outline(mask, width_px)] = colour
    return out


def line_width_px(width_px: int) -> int:
    """Outline width that stays visible on a picture ``width_px`` wide."""
    return max(1, int(math.ceil(width_px / 700)))


def greyed(rgb: ArrayLike, amount: float = 0.6) -> NDArray[np.uint8]:
    """``rgb`` washed towards white (a background that does not compete with overlays)."""
    base = np.asarray(rgb, dtype=np.float32)
    return np.clip(np.round(base + (255 - base) * amount), 0, 255).astype(np.uint8)
