"""Mask clean-up: drop small regions, fill small holes; sizes in µm², converted once.

Connectivity: regions are 8-connected (as in :mod:`engine.post.compute.components`), so the
holes, their complement, are 4-connected background components. A hole is background that does
not touch the border of the map: background reaching the edge is outside, whatever its size.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from engine.metrics.binary import as_mask

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)

_EPS = 1e-9  # absorbs float error when an area in µm² is an exact multiple of a pixel's area


def min_region_px(min_region_um2: float, pixel_um: float) -> int:
    """Smallest region kept, in pixels: ``ceil(min_region_um2 / pixel_um²)``."""
    return max(0, math.ceil(min_region_um2 / (pixel_um * pixel_um) - _EPS))


def max_hole_px(max_hole_um2: float, pixel_um: float) -> float:
    """Largest hole filled, in pixels: ``floor(max_hole_um2 / pixel_um²)`` (inf stays inf)."""
    if math.isinf(max_hole_um2):
        return math.inf
    return max(0, math.floor(max_hole_um2 / (pixel_um * pixel_um) + _EPS))


def clean_mask(
    mask: ArrayLike,
    pixel_um: float,
    *,
    min_region_um2: float = 0.0,
    max_hole_um2: float = 0.0,
) -> NDArray[np.bool_]:
    """Remove regions smaller than ``min_region_um2``, then fill holes up to ``max_hole_um2``.

    Parameters
    ----------
    mask
        2-D bool mask on a grid of ``pixel_um`` µm pixels.
    pixel_um
        Grid pixel size in µm (square pixels).
    min_region_um2
        Regions (8-connected) with a smaller area are removed; a region of exactly this area stays.
    max_hole_um2
        Enclosed holes (4-connected) of at most this area are filled; ``math.inf`` fills all.
    """
    if pixel_um <= 0:
        raise ValueError(f"pixel_um must be positive, got {pixel_um}")
    if min_region_um2 < 0 or max_hole_um2 < 0:
        raise ValueError("min_region_um2 and max_hole_um2 must be >= 0")
    m = as_mask(mask, "mask")
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    out = m.copy()
    keep_px = min_region_px(min_region_um2, pixel_um)
    if keep_px > 1 and out.any():
        labels, _ = ndimage.label(out, structure=EIGHT_CONNECTED)
        sizes = np.bincount(labels.ravel())
        keep = sizes >= keep_px
        keep[0] = False
        out = keep[labels]
    fill_px = max_hole_px(max_hole_um2, pixel_um)
    if fill_px >= 1 and out.any():
        holes, _ = ndimage.label(~out, structure=FOUR_CONNECTED)
        sizes = np.bincount(holes.ravel())
        fill = sizes <= fill_px
        fill[0] = False
        edge = np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]])
        fill[edge] = False
        out |= fill[holes]
    return out
