"""Polygon rasterisation by scanline parity, exact and consistent across tiles.

A pixel belongs to a polygon when its centre is inside (even–odd rule over all rings). Crossings
are computed in absolute level coordinates, so two tiles that share a row agree on every pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry.base import BaseGeometry


@dataclass(frozen=True, eq=False)
class EdgeTable:
    """Non-horizontal edges of all rings of a geometry, level-0 pixels (x1, y1, x2, y2)."""

    x1: NDArray[np.float64]
    y1: NDArray[np.float64]
    x2: NDArray[np.float64]
    y2: NDArray[np.float64]

    @classmethod
    def from_geometry(cls, geometry: BaseGeometry) -> EdgeTable:
        """Collect the edges of every ring of a (multi)polygon; overlapping parts must be merged."""
        rings = shapely.get_rings(shapely.get_parts(geometry)) if not geometry.is_empty else []
        starts: list[NDArray[np.float64]] = []
        ends: list[NDArray[np.float64]] = []
        for ring in rings:
            xy = shapely.get_coordinates(ring)
            starts.append(xy[:-1])
            ends.append(xy[1:])
        if not starts:
            empty = np.zeros(0, dtype=np.float64)
            return cls(empty, empty, empty, empty)
        a = np.concatenate(starts)
        b = np.concatenate(ends)
        keep = a[:, 1] != b[:, 1]
        a, b = a[keep], b[keep]
        return cls(a[:, 0].copy(), a[:, 1].copy(), b[:, 0].copy(), b[:, 1].copy())

    def __len__(self) -> int:
        return int(self.x1.size)


def rasterise(
    edges: EdgeTable,
    x0_px: float,
    y0_px: float,
    width: int,
    height: int,
    downsample: float = 1.0,
) -> NDArray[np.bool_]:
    """Mask of the pixels of a region whose centres fall inside the polygon.

    Parameters
    ----------
    edges
        Edge table of the polygon, level-0 pixels.
    x0_px, y0_px
        Level-0 position of the region's top-left corner.
    width, height
        Region size in pixels at ``downsample``.
    downsample
        Level-0 pixels per output pixel.

    Returns
    -------
    Boolean array (height, width).
    """
    d = float(downsample)
    ymin = np.minimum(edges.y1, edges.y2)
    ymax = np.maximum(edges.y1, edges.y2)
    # Row i's centre: y0 + (i + 0.5) d; an edge crosses it when ymin <= yc < ymax.
    i_start = np.ceil((ymin - y0_px) / d - 0.5)
    i_end = np.ceil((ymax - y0_px) / d - 0.5)
    i_start = np.clip(i_start, 0, height).astype(np.int64)
    i_end = np.clip(i_end, 0, height).astype(np.int64)
    counts = i_end - i_start
    sel = counts > 0
    if not sel.any():
        return np.zeros((height, width), dtype=bool)
    counts = counts[sel]
    i_start = i_start[sel]
    x1, y1, x2, y2 = edges.x1[sel], edges.y1[sel], edges.x2[sel], edges.y2[sel]
    edge_idx = np.repeat(np.arange(counts.size), counts)
    first = np.cumsum(counts) - counts
    rows = i_start[edge_idx] + (np.arange(edge_idx.size) - first[edge_idx])
    yc = y0_px + (rows + 0.5) * d
    x1e, y1e = x1[edge_idx], y1[edge_idx]
    x_cross = x1e + (yc - y1e) * ((x2[edge_idx] - x1e) / (y2[edge_idx] - y1e))
    offset = x0_px / d
    if float(offset).is_integer():
        # Absolute column index first, so every tile of a row makes the same decision.
        col = np.floor(x_cross / d - 0.5) + (1.0 - offset)
    else:
        col = np.floor(x_cross / d - 0.5 - offset) + 1.0
    col = np.clip(col, 0, width).astype(np.int64)
    inner = (col > 0) & (col < width)
    if not inner.any():
        # No boundary inside the region: each row is wholly in or out (parity of crossings left).
        left = np.bincount(rows[col == 0], minlength=height) & 1
        return np.broadcast_to(left.astype(bool)[:, None], (height, width)).copy()
    toggles = np.bincount(rows * (width + 1) + col, minlength=height * (width + 1))
    parity = np.bitwise_xor.accumulate(
        (toggles.reshape(height, width + 1) & 1).astype(np.uint8), axis=1
    )
    return parity[:, :width].astype(bool)
