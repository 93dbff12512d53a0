"""Per-slide score normalisation over tissue only."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from engine.metrics.binary import as_mask


def zscore_over_tissue(scores: ArrayLike, tissue: ArrayLike) -> NDArray[np.float32]:
    """Z-score of ``scores`` with mean and std taken over tissue pixels with a finite score.

    Off tissue and where the score is not finite the result is NaN. The std is the population
    std (ddof 0). A constant slide (std 0) gives 0 on its scored tissue, since it carries no
    ranking, and a slide with no scored tissue is all NaN. Statistics are computed in float64.
    """
    s = np.asarray(scores)
    t = as_mask(tissue, "tissue")
    if s.shape != t.shape:
        raise ValueError(f"scores has shape {s.shape}, tissue {t.shape}")
    s64 = s.astype(np.float64)
    on = t & np.isfinite(s64)
    out = np.full(s.shape, np.nan, dtype=np.float32)
    if not on.any():
        return out
    values = s64[on]
    mean = values.mean()
    std = values.std()
    if std == 0 or not np.isfinite(std):
        out[on] = 0.0
    else:
        out[on] = ((values - mean) / std).astype(np.float32)
    return out
