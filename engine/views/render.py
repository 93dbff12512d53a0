"""Pure colour work: display values, smoothing, clipping, colormaps, class maps, compositing.

Arrays in, arrays out; images are ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA ``uint8``. Off tissue
and where nothing was scored a heatmap is fully transparent (alpha 0), so a viewer sees the
slide there, never a colour that means "score 0".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache

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
    return _colormap_lut(name, n).copy()


@cache
def _colormap_lut(name: str, n: int) -> NDArray[np.uint8]:
    import matplotlib

    cmap = matplotlib.colormaps[name].resampled(n)
    lut = cmap(np.linspace(0.0, 1.0, n))[:, :3]
    return np.round(lut * 255).astype(np.uint8)


@cache
def _rgba_lut(name: str) -> NDArray[np.uint8]:
    """``(257, 4)``: the colormap's 256 colours, opaque, then a transparent black (not shown)."""
    table = np.zeros((257, 4), np.uint8)
    table[:256, :3] = _colormap_lut(name, 256)
    table[:256, 3] = 255
    return table


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
    # round(clip((v - low) / (high - low), 0, 1) * 255): the colour's row, computed in place;
    # row 256 of the table is transparent black, for pixels not shown.
    scaled = v - low
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled /= high - low
    np.clip(scaled, 0.0, 1.0, out=scaled)
    scaled *= 255
    np.round(scaled, out=scaled)
    scaled[~show] = 256
    return _rgba_lut(colormap)[scaled.astype(np.intp)]


def alpha_by_value(
    rgba: ArrayLike, values: ArrayLike, low: float, high: float
) -> NDArray[np.uint8]:
    """``rgba`` with its alpha scaled by where each value lies in ``[low, high]`` (0 at low, 1 at high).

    Over the slide, low scores then let the tissue show through and high scores stand out.
    """
    out = np.array(rgba, dtype=np.uint8, copy=True)
    v = np.asarray(values, dtype=np.float64)
    scaled = v - low  # nan_to_num(clip((v - low) / (high - low), 0, 1)), in place
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled /= high - low
    np.clip(scaled, 0.0, 1.0, out=scaled)
    np.nan_to_num(scaled, copy=False, nan=0.0)
    alpha = out[..., 3].astype(np.float64)
    alpha *= scaled
    np.round(alpha, out=alpha)
    out[..., 3] = alpha.astype(np.uint8)
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
    over = np.asarray(overlay_rgba)
    base = np.array(base_rgb, dtype=np.float32, copy=True)
    if base.shape[:2] != over.shape[:2]:
        raise ValueError(f"base is {base.shape[:2]}, overlay {over.shape[:2]}")
    # base * (1 - alpha) + rgb * alpha with alpha = a / 255 * opacity, in float32, in place.
    alpha = over[..., 3:4].astype(np.float32)
    alpha /= 255.0
    alpha *= float(opacity)
    rgb = over[..., :3].astype(np.float32)
    rgb *= alpha
    np.subtract(1, alpha, out=alpha)
    base *= alpha
    base += rgb
    np.round(base, out=base)
    np.clip(base, 0, 255, out=base)
    return base.astype(np.uint8)


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
