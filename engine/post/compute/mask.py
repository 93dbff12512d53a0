"""The predicted mask of one slide: the single definition post's tables and views' outlines share."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from engine.post.compute.morphology import clean_mask
from engine.post.compute.normalise import zscore_over_tissue
from engine.post.compute.thresholds import apply_threshold


def predicted_mask(
    scores: ArrayLike,
    tissue: ArrayLike,
    *,
    threshold: float,
    score_kind: Literal["probability", "zscore"],
    pixel_um: float,
    min_region_um2: float = 0.0,
    max_hole_um2: float = 0.0,
) -> NDArray[np.bool_]:
    """``scores >= threshold`` on tissue (z-scored over tissue first if asked), then cleaned.

    Scores are compared raw for ``probability`` and as a per-slide z-score over tissue for
    ``zscore``; the mask is restricted to tissue before :func:`clean_mask` (sizes in µm²).
    """
    values = np.asarray(scores, dtype=np.float32)
    on_tissue = np.asarray(tissue).astype(bool)
    if score_kind == "zscore":
        values = zscore_over_tissue(values, on_tissue)
    mask = apply_threshold(values, threshold) & on_tissue
    return clean_mask(mask, pixel_um, min_region_um2=min_region_um2, max_hole_um2=max_hole_um2)
