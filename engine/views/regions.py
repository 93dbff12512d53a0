"""Predicted regions of one slide: post's, as written, or recomputed when views set their own rule.

Post writes each region's outline (with holes) into its ``regions`` table once;
:meth:`SlideRegions.from_rows` reads them and :meth:`SlideRegions.mask_on` rasterises them for
overlays, so views draw exactly what post measured. Without post (or with a threshold or
morphology of the views' own) the regions are recomputed: :func:`predicted_mask` composes post's
pure functions in post's order (z-score over tissue when the threshold is on z-scores,
``score >= threshold`` on tissue, then :func:`~engine.post.compute.clean_mask`), and
:func:`slide_regions` measures and outlines the result in level-0 pixels, with region ids equal
to the regions table's for the same mask.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from shapely.geometry.polygon import orient

from engine.annotations.rasterise import fill_even_odd, ring_edges
from engine.post.compute import (
    Region,
    label_regions,
    region_outlines,
    regions,
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
        scores,
        tissue,
        threshold=rule.threshold,
        score_kind=rule.score_kind,
        pixel_um=pixel_um,
        min_region_um2=rule.min_region_um2,
        max_hole_um2=rule.max_hole_um2,
    )


@dataclass(frozen=True)
class SlideRegions:
    """Regions of one slide's mask: measurements and outer rings in level-0 pixels, by region id."""

    regions: tuple[Region, ...]
    polygons: dict[int, shapely.Polygon]
    """Outer ring and holes of each region, level-0 pixels, by region id."""
    pixel_um: float

    @classmethod
    def from_rows(
        cls, rows: Sequence[Mapping[str, Any]], *, pixel_um: float, simplify_level0_px: float = 0.0
    ) -> SlideRegions:
        """The regions post measured and outlined (rows of its ``regions`` table), as they are."""
        fields = [f.name for f in dataclasses.fields(Region)]
        ordered = sorted(rows, key=lambda r: int(r["region_id"]))
        found = tuple(Region(**{name: row[name] for name in fields}) for row in ordered)
        polygons: dict[int, shapely.Polygon] = {}
        for row in ordered:
            if row.get("outline_wkb") is not None:
                polygon = shapely.from_wkb(row["outline_wkb"])
                if simplify_level0_px > 0:
                    polygon = orient(
                        polygon.simplify(simplify_level0_px, preserve_topology=True), sign=1.0
                    )
                polygons[int(row["region_id"])] = polygon
        return cls(found, polygons, pixel_um)

    def mask_on(
        self,
        grid: Frame,
        *,
        mpp_x: float,
        mpp_y: float,
        level0_translation_x_um: float = 0.0,
        level0_translation_y_um: float = 0.0,
    ) -> NDArray[np.bool_]:
        """The regions rasterised at ``grid``'s pixel centres (the one rasteriser, even-odd)."""
        cx = (grid.centres_x_um() - level0_translation_x_um) / mpp_x + 0.5  # level-0 px, edges at k
        cy = (grid.centres_y_um() - level0_translation_y_um) / mpp_y + 0.5
        return fill_even_odd(ring_edges(list(self.polygons.values())), cx, cy)


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
