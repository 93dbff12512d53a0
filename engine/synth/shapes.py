"""Random smooth outlines for tissue pieces and tumour regions."""

from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

GRID_PX = 0.25
"""Vertices are snapped to this grid (exact in binary), so rendering and annotations agree."""


def random_blob(
    rng: np.random.Generator,
    centre_xy: tuple[float, float],
    radius_px: float,
    *,
    aspect: float = 1.0,
    roughness: float = 0.18,
    n_vertices: int = 256,
) -> Polygon:
    """A smooth star-shaped polygon: a circle with a few random low harmonics, stretched, rotated.

    Parameters
    ----------
    rng
        Random generator.
    centre_xy
        Centre in level-0 pixels.
    radius_px
        Mean radius before stretching; the area stays about ``pi * radius_px**2``.
    aspect
        Ratio of the long to the short axis.
    roughness
        Amplitude of the harmonics relative to the radius (kept below 0.5 so the outline never
        crosses the centre).
    n_vertices
        Number of vertices.
    """
    theta = np.linspace(0.0, 2.0 * np.pi, n_vertices, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 8):
        amp = roughness * rng.uniform(0.3, 1.0) / (k - 1) ** 0.9
        r += amp * np.cos(k * theta + rng.uniform(0.0, 2.0 * np.pi))
    r = np.clip(r, 0.35, None)
    sx = np.sqrt(aspect)
    x = r * np.cos(theta) * sx
    y = r * np.sin(theta) / sx
    rot = rng.uniform(0.0, np.pi)
    xr = x * np.cos(rot) - y * np.sin(rot)
    yr = x * np.sin(rot) + y * np.cos(rot)
    coords = np.column_stack([centre_xy[0] + radius_px * xr, centre_xy[1] + radius_px * yr])
    return Polygon(coords)


def as_clean_multipolygon(geometry: BaseGeometry, *, fill_holes: bool = True) -> MultiPolygon:
    """Merge, optionally fill holes, snap to the vertex grid and drop slivers."""
    if geometry.is_empty:
        return MultiPolygon()
    geometry = shapely.make_valid(geometry)
    parts = [p for p in shapely.get_parts(geometry) if isinstance(p, Polygon) and not p.is_empty]
    if fill_holes:
        parts = [Polygon(p.exterior) for p in parts]
    merged = shapely.union_all(parts) if parts else Polygon()
    snapped = shapely.set_precision(merged, GRID_PX)
    polys = [
        p for p in shapely.get_parts(snapped) if isinstance(p, Polygon) and p.area > 16 * GRID_PX
    ]
    if fill_holes:
        polys = [Polygon(p.exterior) for p in polys]
    polys.sort(key=lambda p: (p.bounds[1], p.bounds[0]))
    return MultiPolygon(polys)
