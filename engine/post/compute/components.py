"""Connected regions of a slide's mask: measurements and outlines in level-0 pixels.

The whole slide map is labelled at once (scipy), so a region that spans chunks is one region.
Regions are 8-connected: pixels touching at a corner belong together, as a pathologist would
read a diagonal strand of tumour. Region ids are the labels, 1..n in raster order of each
region's first pixel, and are the same in :func:`regions` and :func:`region_polygons`.

Geometry: grid pixel (row ``r``, column ``c``) covers level-0 x from
``origin_x_level0_px + c * level0_px_per_pixel_x`` to the next column's start (y likewise).
Centroids are means of pixel centres; bounding boxes run from the first pixel's start edge to
the last pixel's end edge (x1, y1 exclusive).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage
from shapely.geometry.polygon import orient
from skimage import measure

from engine.metrics.binary import as_mask
from engine.post.compute.morphology import EIGHT_CONNECTED


@dataclass(frozen=True, slots=True)
class Region:
    """One connected region: size, position in level-0 pixels, and its scores."""

    region_id: int
    area_px: int
    area_um2: float
    centroid_x_level0_px: float
    centroid_y_level0_px: float
    bbox_x0_level0_px: float
    bbox_y0_level0_px: float
    bbox_x1_level0_px: float
    bbox_y1_level0_px: float
    mean_score: float | None
    max_score: float | None


@dataclass(frozen=True, slots=True)
class _Grid:
    x0: float
    y0: float
    sx: float
    sy: float


def _grid(
    pixel_um: float,
    mpp: float | None,
    level0_px_per_pixel_x: float | None,
    level0_px_per_pixel_y: float | None,
    origin_x_level0_px: float,
    origin_y_level0_px: float,
) -> _Grid:
    if pixel_um <= 0:
        raise ValueError(f"pixel_um must be positive, got {pixel_um}")
    if level0_px_per_pixel_x is None or level0_px_per_pixel_y is None:
        if mpp is None or mpp <= 0:
            raise ValueError("give level0_px_per_pixel_x/_y, or a positive level-0 mpp")
        per_pixel = pixel_um / mpp
        level0_px_per_pixel_x = (
            per_pixel if level0_px_per_pixel_x is None else level0_px_per_pixel_x
        )
        level0_px_per_pixel_y = (
            per_pixel if level0_px_per_pixel_y is None else level0_px_per_pixel_y
        )
    if level0_px_per_pixel_x <= 0 or level0_px_per_pixel_y <= 0:
        raise ValueError("level0_px_per_pixel_x and _y must be positive")
    return _Grid(
        float(origin_x_level0_px),
        float(origin_y_level0_px),
        float(level0_px_per_pixel_x),
        float(level0_px_per_pixel_y),
    )


def label_regions(mask: ArrayLike) -> tuple[NDArray[np.int32], int]:
    """8-connected labels of a 2-D mask (0 = background) and the number of regions."""
    m = as_mask(mask, "mask")
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    labels = np.zeros(m.shape, dtype=np.int32)
    n = int(ndimage.label(m, structure=EIGHT_CONNECTED, output=labels))
    return labels, n


def _labels_for(mask: ArrayLike, labels: ArrayLike | None) -> tuple[NDArray[np.integer], int]:
    if labels is None:
        return label_regions(mask)
    lab = np.asarray(labels)
    m = as_mask(mask, "mask")
    if not np.issubdtype(lab.dtype, np.integer) or lab.shape != m.shape:
        raise ValueError("labels must be the integer labels of mask, from label_regions(mask)")
    return lab, int(lab.max(initial=0))


def regions(
    mask: ArrayLike,
    scores: ArrayLike | None,
    pixel_um: float,
    *,
    labels: ArrayLike | None = None,
    mpp: float | None = None,
    level0_px_per_pixel_x: float | None = None,
    level0_px_per_pixel_y: float | None = None,
    origin_x_level0_px: float = 0.0,
    origin_y_level0_px: float = 0.0,
) -> list[Region]:
    """Measure every 8-connected region of ``mask`` (see the module doc for the geometry).

    Parameters
    ----------
    mask
        2-D mask (bool, or integer with non-zero = region) on a grid of ``pixel_um`` µm
        (square) pixels.
    scores
        Score map of the same shape, or ``None``. Mean and max use the region's finite
        scores and are ``None`` when it has none (e.g. a filled hole that was never scored).
    pixel_um
        Grid pixel size in µm; ``area_um2 = area_px * pixel_um**2``.
    mpp
        Level-0 µm per pixel; gives ``level0_px_per_pixel_* = pixel_um / mpp`` when those are
        not given (give them to carry the exact, possibly anisotropic, downsample).
    origin_x_level0_px, origin_y_level0_px
        Level-0 position of the grid's top-left pixel corner.
    labels
        ``label_regions(mask)[0]`` when already computed (saves labelling twice).

    Costs a few passes over the foreground pixels (``bincount``, ``find_objects``), not a Python
    loop per region or pixel.
    """
    g = _grid(
        pixel_um,
        mpp,
        level0_px_per_pixel_x,
        level0_px_per_pixel_y,
        origin_x_level0_px,
        origin_y_level0_px,
    )
    labels_arr, n = _labels_for(mask, labels)
    if n == 0:
        return []
    flat_index = np.flatnonzero(labels_arr)
    lab = labels_arr.ravel()[flat_index]
    rows, cols = np.divmod(flat_index, labels_arr.shape[1])
    area = np.bincount(lab, minlength=n + 1)
    mean_row = np.bincount(lab, weights=rows, minlength=n + 1)[1:] / area[1:]
    mean_col = np.bincount(lab, weights=cols, minlength=n + 1)[1:] / area[1:]

    mean_score: list[float | None] = [None] * n
    max_score: list[float | None] = [None] * n
    if scores is not None:
        s = np.asarray(scores)
        if s.shape != labels_arr.shape:
            raise ValueError(f"scores has shape {s.shape}, mask {labels_arr.shape}")
        sv = s.ravel()[flat_index].astype(np.float64)
        finite = np.isfinite(sv)
        lf, sf = lab[finite], sv[finite]
        n_scored = np.bincount(lf, minlength=n + 1)
        total = np.bincount(lf, weights=sf, minlength=n + 1)
        top = np.full(n + 1, -np.inf)
        np.maximum.at(top, lf, sf)
        mean_score = [
            float(t / k) if k else None for t, k in zip(total[1:], n_scored[1:], strict=True)
        ]
        max_score = [float(m) if k else None for m, k in zip(top[1:], n_scored[1:], strict=True)]

    pixel_area_um2 = float(pixel_um) * float(pixel_um)
    out: list[Region] = []
    for i, box in enumerate(ndimage.find_objects(labels_arr)):
        if box is None:  # pragma: no cover - ndimage.label gives contiguous labels_arr
            continue
        ys, xs = box
        out.append(
            Region(
                region_id=i + 1,
                area_px=int(area[i + 1]),
                area_um2=float(area[i + 1]) * pixel_area_um2,
                centroid_x_level0_px=g.x0 + (float(mean_col[i]) + 0.5) * g.sx,
                centroid_y_level0_px=g.y0 + (float(mean_row[i]) + 0.5) * g.sy,
                bbox_x0_level0_px=g.x0 + xs.start * g.sx,
                bbox_y0_level0_px=g.y0 + ys.start * g.sy,
                bbox_x1_level0_px=g.x0 + xs.stop * g.sx,
                bbox_y1_level0_px=g.y0 + ys.stop * g.sy,
                mean_score=mean_score[i],
                max_score=max_score[i],
            )
        )
    return out


def signed_area(ring: NDArray[np.float64]) -> float:
    """Shoelace area of a closed ring of (x, y) points, positive when counter-clockwise."""
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


def region_polygons(
    mask: ArrayLike,
    *,
    pixel_um: float,
    labels: ArrayLike | None = None,
    mpp: float | None = None,
    level0_px_per_pixel_x: float | None = None,
    level0_px_per_pixel_y: float | None = None,
    origin_x_level0_px: float = 0.0,
    origin_y_level0_px: float = 0.0,
    tolerance_level0_px: float = 0.0,
) -> dict[int, shapely.Polygon]:
    """Outer ring of each region as a shapely polygon in level-0 pixels, keyed by region id.

    ``mask`` (bool, or integer with non-zero = region) is labelled as in :func:`regions`, so
    ids agree; pass ``labels=label_regions(mask)[0]`` to reuse a labelling. Rings come from
    marching squares at 0.5 (``skimage.measure.find_contours``, corner-touching pixels joined),
    so they pass midway between region and background pixel centres: a polygon's area is a
    little less than its pixel area (a single pixel is a diamond of half its area). Holes are
    not returned.
    ``tolerance_level0_px > 0`` simplifies rings (topology kept). Rings are counter-clockwise
    in (x, y); one ``find_contours`` per region on its bounding box, so thousands are fine.
    """
    g = _grid(
        pixel_um,
        mpp,
        level0_px_per_pixel_x,
        level0_px_per_pixel_y,
        origin_x_level0_px,
        origin_y_level0_px,
    )
    labels_arr, _ = _labels_for(mask, labels)
    polygons: dict[int, shapely.Polygon] = {}
    for i, box in enumerate(ndimage.find_objects(labels_arr)):
        if box is None:
            continue
        region_id = i + 1
        ys, xs = box
        crop = np.zeros((ys.stop - ys.start + 2, xs.stop - xs.start + 2))
        crop[1:-1, 1:-1] = labels_arr[box] == region_id
        # (row, col) -> (x, y) in crop pixels; find_contours rings are closed here (padded crop).
        rings = [c[:, ::-1] for c in measure.find_contours(crop, 0.5, fully_connected="high")]
        areas = [signed_area(r) for r in rings]
        k = int(np.argmax(np.abs(areas)))
        ring = rings[k] if areas[k] > 0 else rings[k][::-1]
        # crop index c -> grid pixel c - 1 + xs.start, whose centre is at +0.5.
        x = g.x0 + (ring[:, 0] + (xs.start - 0.5)) * g.sx
        y = g.y0 + (ring[:, 1] + (ys.start - 0.5)) * g.sy
        polygon = shapely.Polygon(np.column_stack([x, y]))
        if tolerance_level0_px > 0:
            polygon = shapely.geometry.polygon.orient(
                polygon.simplify(tolerance_level0_px, preserve_topology=True), sign=1.0
            )
        polygons[region_id] = polygon
    return polygons


def region_outlines(
    labels: ArrayLike,
    *,
    origin_x_level0_px: float,
    origin_y_level0_px: float,
    level0_px_per_pixel_x: float,
    level0_px_per_pixel_y: float,
    tolerance_level0_px: float = 0.0,
) -> dict[int, shapely.Polygon]:
    """Each labelled region as a polygon *with its holes*, in level-0 pixels, keyed by label.

    Rings are traced as in :func:`engine.post.compute.region_polygons` (marching squares at 0.5
    on the region's padded bounding box, diagonal pixels joined), so the outer ring is the one
    post computes; the region's other rings are its holes (4-connected background it encloses,
    other regions inside them included). With holes, the polygon's area matches the region's
    pixel area up to cut corners, which outer rings alone would not.
    """
    lab = np.asarray(labels)
    polygons: dict[int, shapely.Polygon] = {}
    for index, box in enumerate(ndimage.find_objects(lab)):
        if box is None:
            continue
        region_id = index + 1
        ys, xs = box
        crop = np.zeros((ys.stop - ys.start + 2, xs.stop - xs.start + 2))
        crop[1:-1, 1:-1] = lab[box] == region_id
        rings = [c[:, ::-1] for c in measure.find_contours(crop, 0.5, fully_connected="high")]
        placed = [
            np.column_stack(
                [
                    origin_x_level0_px + (r[:, 0] + xs.start - 0.5) * level0_px_per_pixel_x,
                    origin_y_level0_px + (r[:, 1] + ys.start - 0.5) * level0_px_per_pixel_y,
                ]
            )
            for r in rings
        ]
        areas = [abs(signed_area(r)) for r in placed]
        outer = int(np.argmax(areas))
        holes = [r for k, r in enumerate(placed) if k != outer and len(r) >= 4]
        polygon = shapely.Polygon(placed[outer], holes)
        if not polygon.is_valid:  # rings touching at a pixel corner
            repaired = shapely.make_valid(polygon)
            parts = [
                g for g in getattr(repaired, "geoms", [repaired]) if isinstance(g, shapely.Polygon)
            ]
            polygon = max(parts, key=lambda g: g.area) if parts else shapely.Polygon(placed[outer])
        # Tolerance 0 still drops the collinear vertices of pixel-edge runs (same shape, smaller file).
        polygon = polygon.simplify(max(0.0, tolerance_level0_px), preserve_topology=True)
        polygons[region_id] = orient(polygon, sign=1.0)
    return polygons
