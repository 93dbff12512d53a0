"""Annotation quality measures of one slide (pure compute on polygons in level-0 px).

What a lab checks before training or scoring against annotations: how many objects, how dense per
mm² of tissue, how large (µm²), what fraction of the tissue is annotated positive, and which
objects are suspect: partly outside the slide, mostly off tissue (annotated glass), or degenerate
(fewer than three distinct vertices, zero area, or self-intersecting as drawn — those are still
measured after ``shapely.make_valid`` repairs them, as ingest rasterises them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry


@dataclass(frozen=True)
class AnnotationQuality:
    """One slide's annotation measures; areas in µm², densities per mm² of tissue."""

    objects: int
    degenerate_objects: int
    objects_outside_slide: int  # any part beyond the slide's edge
    objects_off_tissue: int  # less than ``min_on_tissue`` of the area on tissue
    density_per_mm2_tissue: float | None
    area_um2_min: float | None
    area_um2_median: float | None
    area_um2_max: float | None
    positive_fraction_of_tissue: float | None


def _repaired(polygon: Polygon) -> BaseGeometry | None:
    """The polygon as ingest rasterises it (repaired if invalid); ``None`` if nothing is left.

    An outline with fewer than three distinct vertices, or whose repair has no area, is empty.
    (A self-intersecting bow-tie's own area is zero — its lobes cancel — so area is judged after
    repair.)
    """
    ring = np.asarray(polygon.exterior.coords)
    if len({(float(x), float(y)) for x, y in ring}) < 3:
        return None
    fixed = polygon if polygon.is_valid else shapely.make_valid(polygon)
    return fixed if fixed.area > 0 else None


def _fraction_on_tissue(
    polygon: BaseGeometry, tissue: NDArray[np.bool_], tissue_pixel_px: float
) -> float:
    """Share of the polygon's area on tissue, sampled at the tissue mask's pixel centres."""
    min_x, min_y, max_x, max_y = polygon.bounds
    height, width = tissue.shape
    c0, c1 = max(0, int(min_x // tissue_pixel_px)), min(width, int(max_x // tissue_pixel_px) + 1)
    r0, r1 = max(0, int(min_y // tissue_pixel_px)), min(height, int(max_y // tissue_pixel_px) + 1)
    if c1 <= c0 or r1 <= r0:
        return 0.0
    cols, rows = np.meshgrid(np.arange(c0, c1), np.arange(r0, r1))
    xs, ys = (cols + 0.5) * tissue_pixel_px, (rows + 0.5) * tissue_pixel_px
    inside = shapely.contains_xy(polygon, xs, ys)
    if not inside.any():  # smaller than one tissue pixel: judge by its centroid's pixel
        point = polygon.representative_point()
        row, col = int(point.y // tissue_pixel_px), int(point.x // tissue_pixel_px)
        return float(0 <= row < height and 0 <= col < width and tissue[row, col])
    return float(tissue[r0:r1, c0:c1][inside].mean())


def annotation_quality(
    polygons: Sequence[Polygon],
    *,
    holes: Sequence[Polygon] = (),
    slide_width_px: int,
    slide_height_px: int,
    mpp: float,
    tissue: NDArray[np.bool_],
    tissue_pixel_um: float,
    min_on_tissue: float = 0.5,
) -> AnnotationQuality:
    """Measures of a slide's positive annotation objects (polygons in level-0 px at ``mpp``).

    ``polygons`` are the objects as drawn (one per outline); ``holes`` are areas drawn as
    exclusions, subtracted from the positive area.

    ``tissue`` is the slide's tissue mask at ``tissue_pixel_um`` µm/px, origin at the slide's.
    """
    if not (mpp > 0 and tissue_pixel_um > 0):
        raise ValueError("mpp and tissue_pixel_um must be positive")
    tissue = np.asarray(tissue, bool)
    slide = box(0, 0, slide_width_px, slide_height_px)
    tissue_pixel_px = tissue_pixel_um / mpp
    tissue_mm2 = float(tissue.sum()) * tissue_pixel_um**2 / 1e6
    repaired = [_repaired(p) for p in polygons]
    degenerate = sum(r is None or not p.is_valid for p, r in zip(polygons, repaired, strict=True))
    usable: list[BaseGeometry] = [r for r in repaired if r is not None]
    areas_um2 = np.array([p.area * mpp * mpp for p in usable], np.float64)
    outside = sum(1 for p in usable if not slide.contains(p))
    off_tissue = sum(
        1
        for p in usable
        if isinstance(p, Polygon)
        and _fraction_on_tissue(p, tissue, tissue_pixel_px) < min_on_tissue
    )
    positive = shapely.union_all(usable).intersection(slide) if usable else None
    if positive is not None and holes:
        positive = positive.difference(shapely.union_all(list(holes)))
    union_um2 = float(positive.area) * mpp * mpp if positive is not None else 0.0
    return AnnotationQuality(
        objects=len(polygons),
        degenerate_objects=degenerate,
        objects_outside_slide=outside,
        objects_off_tissue=off_tissue,
        density_per_mm2_tissue=len(usable) / tissue_mm2 if tissue_mm2 > 0 else None,
        area_um2_min=float(areas_um2.min()) if areas_um2.size else None,
        area_um2_median=float(np.median(areas_um2)) if areas_um2.size else None,
        area_um2_max=float(areas_um2.max()) if areas_um2.size else None,
        positive_fraction_of_tissue=union_um2 / (tissue_mm2 * 1e6) if tissue_mm2 > 0 else None,
    )
