"""Per-slide tumour quantities from the cleaned mask, the tissue mask and the regions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from engine.metrics.binary import as_mask
from engine.post.compute.components import Region

UM2_PER_MM2 = 1e6


@dataclass(frozen=True, slots=True)
class SlideQuantities:
    """Tumour burden of one slide; ``None`` where undefined."""

    tumour_px: int
    tissue_px: int
    tumour_pct_of_tissue: float | None
    tumour_mm2: float
    n_regions: int
    largest_region_mm2: float | None


def quantify(
    pred_mask: ArrayLike, tissue: ArrayLike, pixel_um: float, regions: Sequence[Region]
) -> SlideQuantities:
    """Tumour pixels, share of tissue, area and regions of one slide.

    Tumour is counted on tissue only (``pred_mask & tissue``), so the share is at most 100 %;
    ``tumour_pct_of_tissue`` is ``None`` without tissue and ``largest_region_mm2`` is ``None``
    without regions. ``regions`` are those of the same mask (:func:`engine.post.compute.components.regions`).
    """
    if pixel_um <= 0:
        raise ValueError(f"pixel_um must be positive, got {pixel_um}")
    pred = as_mask(pred_mask, "pred_mask")
    tissue_mask = as_mask(tissue, "tissue")
    if pred.shape != tissue_mask.shape:
        raise ValueError(f"pred_mask has shape {pred.shape}, tissue {tissue_mask.shape}")
    tumour_px = int(np.count_nonzero(pred & tissue_mask))
    tissue_px = int(np.count_nonzero(tissue_mask))
    largest_um2 = max((r.area_um2 for r in regions), default=None)
    return SlideQuantities(
        tumour_px=tumour_px,
        tissue_px=tissue_px,
        tumour_pct_of_tissue=100.0 * tumour_px / tissue_px if tissue_px else None,
        tumour_mm2=tumour_px * pixel_um * pixel_um / UM2_PER_MM2,
        n_regions=len(regions),
        largest_region_mm2=None if largest_um2 is None else largest_um2 / UM2_PER_MM2,
    )
