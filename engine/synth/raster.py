"""Polygon rasterisation for the generator: the edge tables of its shapes, filled by the one
rasteriser (:func:`engine.annotations.rasterise.fill_even_odd`, even-odd at pixel centres), so a
synthetic slide's pixels and the annotation ingest rasterises from its polygons agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry.base import BaseGeometry

from engine.annotations.rasterise import fill_even_odd, pixel_centres


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
    edge_array = np.stack([edges.x1, edges.y1, edges.x2, edges.y2], axis=1)
    return fill_even_odd(
        edge_array,
        pixel_centres(x0_px, width, downsample),
        pixel_centres(y0_px, height, downsample),
    )
