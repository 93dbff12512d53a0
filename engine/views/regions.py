"""Predicted regions of one slide, recomputed from its score map with post's parameters.

The post stage writes the regions *table*; drawing and exporting outlines needs the cleaned mask
itself. :func:`predicted_mask` composes post's pure functions in post's order (z-score over
tissue when the threshold is on z-scores, ``score >= threshold`` on tissue, then
:func:`~engine.post.compute.clean_mask`), and :func:`slide_regions` measures and outlines the
result in level-0 pixels, with region ids equal to the regions table's for the same mask.
It is pure (arrays in, arrays out), so post can call it too and both stay one definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage
from shapely.geometry.polygon import orient
from skimage import measure

from engine.post.compute import (
    Region,
    label_regions,
    regions,
    signed_area,
    zscore_over_tissue,
)
from engine.post.compute import predicted_mask as compute_predicted_mask
from engine.store.frame import Frame

ScoreKind = Literal["probability", "zscore"]


@dataclass(frozen=True)
class RegionRule:
    """How a score map becomes regions: threshold on raw scores or z-scores, then morphology (µm²)."""

    threshold: float
    score_kind: ScoreKind = "probability"
    min_region_um2: float = 0.0
    max_hole_um2: float = 0.0

    def __post_init__(self) -> None:
        if self.score_kind not in ("probability", "zscore"):
            raise ValueError(
                f"score_kind must be 'probability' or 'zscore', got {self.score_kind!r}"
            )


def thresholded_scores(
    scores: ArrayLike, tissue: ArrayLike, score_kind: ScoreKind
) -> NDArray[np.float32]:
    """The scores a threshold of ``score_kind`` is compared with (NaN off tissue)."""
    s = np.asarray(scores, dtype=np.float32)
    t = np.asarray(tissue).astype(bool)
    if score_kind == "zscore":
        return zscore_over_tissue(s, t)
    return np.where(t, s, np.nan).astype(np.float32)


def predicted_mask(
    scores: ArrayLike, tissue: ArrayLike, rule: RegionRule, *, pixel_um: float
) -> NDArray[np.bool_]:
    """Cleaned positive mask of one slide's score map: post's own definition, with ``rule``."""
    return compute_predicted_mask(
        scores, tissue, threshold=rule.threshold, score_kind=rule.score_kind, pixel_um=pixel_um,
        min_region_um2=rule.min_region_um2, max_hole_um2=rule.max_hole_um2,
    )



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


@dataclass(frozen=True)
class SlideRegions:
    """Regions of one slide's mask: measurements and outer rings in level-0 pixels, by region id."""

    regions: tuple[Region, ...]
    polygons: dict[int, shapely.Polygon]
    """Outer ring and holes of each region, level-0 pixels, by region id."""
    pixel_um: float


def slide_regions(
    mask: ArrayLike,
    scores: ArrayLike | None,
    grid: Frame,
    *,
    mpp_x: float,
    mpp_y: float,
    level0_translation_x_um: float = 0.0,
    level0_translation_y_um: float = 0.0,
    simplify_um: float = 0.0,
) -> SlideRegions:
    """Measure and outline every region of ``mask`` (on ``grid``) in level-0 pixels.

    ``scores`` (same grid, or ``None``) give each region's mean and max score.
    """
    m = np.asarray(mask).astype(bool)
    if m.shape != grid.shape:
        raise ValueError(f"mask has shape {m.shape}, grid {grid.shape}")
    labels, _ = label_regions(m)
    placement = grid.level0_placement(
        mpp_x,
        mpp_y,
        level0_translation_x_um=level0_translation_x_um,
        level0_translation_y_um=level0_translation_y_um,
    )
    measured = regions(m, scores, grid.pixel_um, labels=labels, **placement)
    polygons = region_outlines(
        labels, tolerance_level0_px=simplify_um / ((mpp_x + mpp_y) / 2), **placement
    )
    return SlideRegions(tuple(measured), polygons, grid.pixel_um)
