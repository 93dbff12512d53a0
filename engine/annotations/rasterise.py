"""Streaming polygon rasteriser: fills one block at its pixel centres, never the whole mask.

Output pixel ``(i, j)`` of a block at level-0 origin ``(x0, y0)`` and downsample ``ds`` covers
level-0 ``[x0 + j*ds, x0 + (j+1)*ds)`` and is inside a polygon when its centre
``(x0 + (j + 0.5)*ds, y0 + (i + 0.5)*ds)`` is, by the even-odd rule with a half-open scanline
convention (an edge crosses row ``cy`` when ``min(ya, yb) <= cy < max(ya, yb)``; a centre left of
a crossing counts it). Every decision is a comparison of the same floating-point numbers whatever
the block, so blocks stitch to exactly the one-shot result whenever block origins are multiples
of ``ds`` on a common grid and the centres are exact (``ds`` an integer, or a short binary
fraction such as 2.5).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import Polygon

MAX_CELLS = 1 << 22
"""Rows are filled in chunks of at most this many (row, column) cells to bound scratch memory."""


def pixel_centres(origin_px: float, count: int, downsample: float) -> NDArray[np.float64]:
    """Level-0 coordinates of the centres of ``count`` output pixels starting at ``origin_px``."""
    return origin_px + (np.arange(count, dtype=np.float64) + 0.5) * downsample


def ring_edges(polygons: Sequence[Polygon]) -> NDArray[np.float64]:
    """Edges ``(xa, ya, xb, yb)`` of every ring (exterior and holes) of ``polygons``, shape (E, 4)."""
    chunks: list[NDArray[np.float64]] = []
    for polygon in polygons:
        for ring in (polygon.exterior, *polygon.interiors):
            xy = shapely.get_coordinates(ring)
            if len(xy) >= 2:
                chunks.append(np.hstack([xy[:-1], xy[1:]]))
    if not chunks:
        return np.empty((0, 4), dtype=np.float64)
    return np.ascontiguousarray(np.vstack(chunks), dtype=np.float64)


def fill_even_odd(
    edges: NDArray[np.float64],
    cx: NDArray[np.float64],
    cy: NDArray[np.float64],
    *,
    max_cells: int = MAX_CELLS,
) -> NDArray[np.bool_]:
    """Boolean mask (len(cy), len(cx)) of centres inside closed rings ``edges`` (even-odd rule).

    ``cx`` and ``cy`` must be increasing. Rings must be closed and polygons interior-disjoint
    (as in a valid MultiPolygon or a union), so that parities of separate polygons add up.
    """
    height, width = cy.size, cx.size
    out = np.zeros((height, width), dtype=bool)
    if height == 0 or width == 0 or edges.shape[0] == 0:
        return out
    xa, ya, xb, yb = edges.T
    ymin = np.minimum(ya, yb)
    ymax = np.maximum(ya, yb)
    # Edges wholly left of every centre never count. The margin keeps the drop exact even if the
    # interpolated crossing rounds an ulp past the edge's end.
    left_limit = cx[0] - 1e-9 * max(1.0, abs(float(cx[0])))
    keep = (ymax > cy[0]) & (ymin <= cy[-1]) & (np.maximum(xa, xb) >= left_limit)
    if not keep.any():
        return out
    xa, ya, xb, yb, ymin, ymax = (a[keep] for a in (xa, ya, xb, yb, ymin, ymax))
    slope = (xb - xa) / np.where(yb == ya, 1.0, yb - ya)
    rows_per_chunk = max(1, max_cells // (width + 1))
    for r0 in range(0, height, rows_per_chunk):
        r1 = min(height, r0 + rows_per_chunk)
        _fill_rows(out[r0:r1], cx, cy[r0:r1], xa, ya, ymin, ymax, slope)
    return out


def _fill_rows(
    out: NDArray[np.bool_],
    cx: NDArray[np.float64],
    cy: NDArray[np.float64],
    xa: NDArray[np.float64],
    ya: NDArray[np.float64],
    ymin: NDArray[np.float64],
    ymax: NDArray[np.float64],
    slope: NDArray[np.float64],
) -> None:
    height, width = out.shape
    # Rows crossed by each edge form a contiguous range: those with ymin <= cy < ymax.
    start = np.searchsorted(cy, ymin, side="left")
    stop = np.searchsorted(cy, ymax, side="left")
    counts = stop - start
    total = int(counts.sum())
    if total == 0:
        return
    edge = np.repeat(np.arange(counts.size), counts)
    first = np.cumsum(counts) - counts
    row = np.repeat(start, counts) + (np.arange(total) - np.repeat(first, counts))
    x_cross = xa[edge] + (cy[row] - ya[edge]) * slope[edge]
    # Number of centres strictly left of each crossing: those pixels see it on their right.
    k = np.searchsorted(cx, x_cross, side="left")
    hits = np.bincount(row * (width + 1) + k, minlength=height * (width + 1))
    at_or_before = np.cumsum(hits.reshape(height, width + 1), axis=1)
    right_of = at_or_before[:, -1:] - at_or_before[:, :width]
    out |= (right_of & 1).astype(bool)


class PolygonIndex:
    """Interior-disjoint polygons with an STRtree and precomputed edges for fast block fills."""

    def __init__(self, polygons: Sequence[Polygon]) -> None:
        self.polygons = list(polygons)
        self._tree = shapely.STRtree(self.polygons)
        per_polygon = [ring_edges([p]) for p in self.polygons]
        sizes = np.array([len(e) for e in per_polygon], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(sizes)])
        self._edges = np.vstack(per_polygon) if per_polygon else np.empty((0, 4), dtype=np.float64)

    def __len__(self) -> int:
        return len(self.polygons)

    def fill(self, cx: NDArray[np.float64], cy: NDArray[np.float64]) -> NDArray[np.bool_] | None:
        """Mask of centres inside any polygon, or ``None`` when no polygon's bbox meets the block."""
        if not self.polygons or cx.size == 0 or cy.size == 0:
            return None
        hits = self._tree.query(shapely.box(cx[0], cy[0], cx[-1], cy[-1]))
        if hits.size == 0:
            return None
        hits.sort()
        edges = np.vstack([self._edges[self._offsets[i] : self._offsets[i + 1]] for i in hits])
        return fill_even_odd(edges, cx, cy)
