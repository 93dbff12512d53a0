"""Pixels of any region of a synthetic slide at any downsample, as a pure function of its spec."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from engine.synth.raster import rasterise
from engine.synth.spec import SlideSpec
from engine.synth.texture import TUMOUR, paint


def label_region(
    spec: SlideSpec,
    x0_px: float,
    y0_px: float,
    width_px: int,
    height_px: int,
    downsample: float = 1.0,
) -> NDArray[np.uint8]:
    """Class of each pixel of a region: 0 glass, 1 tissue, 2 tumour.

    Parameters
    ----------
    spec
        The slide.
    x0_px, y0_px
        Level-0 position of the region's top-left corner.
    width_px, height_px
        Size of the output in pixels at ``downsample`` (as OpenSlide's ``read_region``).
    downsample
        Level-0 pixels per output pixel.
    """
    labels = rasterise(spec.tissue_edges, x0_px, y0_px, width_px, height_px, downsample).view(
        np.uint8
    )
    if not spec.tumour.is_empty and labels.any():
        bx0, by0, bx1, by1 = spec.tumour.bounds
        x1 = x0_px + width_px * downsample
        y1 = y0_px + height_px * downsample
        if bx0 < x1 and bx1 > x0_px and by0 < y1 and by1 > y0_px:
            tumour = rasterise(spec.tumour_edges, x0_px, y0_px, width_px, height_px, downsample)
            labels = labels.copy()
            labels[tumour & (labels > 0)] = TUMOUR
    return labels


def render_region(
    spec: SlideSpec,
    x0_px: float,
    y0_px: float,
    width_px: int,
    height_px: int,
    downsample: float = 1.0,
) -> NDArray[np.uint8]:
    """RGB pixels of a region, identical wherever and however the slide is tiled.

    Parameters
    ----------
    spec
        The slide.
    x0_px, y0_px
        Level-0 position of the region's top-left corner.
    width_px, height_px
        Size of the output in pixels at ``downsample`` (as OpenSlide's ``read_region``).
    downsample
        Level-0 pixels per output pixel.

    Returns
    -------
    uint8 array (height_px, width_px, 3).
    """
    if width_px <= 0 or height_px <= 0:
        raise ValueError(f"region size must be positive, got {width_px} x {height_px}")
    if downsample <= 0:
        raise ValueError(f"downsample must be positive, got {downsample}")
    labels = label_region(spec, x0_px, y0_px, width_px, height_px, downsample)
    return paint(
        labels,
        x0_px=x0_px,
        y0_px=y0_px,
        downsample=downsample,
        mpp=spec.mpp,
        stain=spec.stain,
        seed=spec.seed,
    )
