"""One slide's row of the metrics table: every per-slide figure from the maps, in one call.

This fixes the row contract that :func:`engine.metrics.cohort.cohort_summary` reads.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from engine.metrics.binary import (
    as_mask,
    binary_metrics,
    case_of,
    confusion_counts,
    patch_auc,
    pearson,
    pixel_auc,
)
from engine.metrics.cohort import burden_stratum


def slide_metrics(
    pred: ArrayLike,
    scores: ArrayLike,
    truth: ArrayLike,
    tissue: ArrayLike,
    *,
    pixel_um: float,
    patch_um: float,
    positive_fraction: float | None = None,
) -> dict[str, Any]:
    """Per-slide metrics of a thresholded mask and its score map against the ground truth.

    Everything is counted over ``tissue`` (truth outside tissue is ignored). Keys: ``tp``,
    ``fp``, ``fn``, ``tn``, ``case``, ``iou``, ``dice``, ``precision``, ``recall``,
    ``specificity``, ``pearson``, ``pixel_auc``, ``patch_auc`` (``None`` when undefined),
    ``truth_px``, ``tissue_px``, ``truth_pct_of_tissue`` (``None`` without tissue) and
    ``burden_stratum``. Pearson and the AUCs are unchanged by a per-slide z-score, so raw or
    normalised scores give the same values.
    """
    tissue_mask = as_mask(tissue, "tissue")
    truth_mask = as_mask(truth, "truth")
    counts = confusion_counts(pred, truth_mask, tissue_mask)
    tissue_px = int(np.count_nonzero(tissue_mask))
    truth_px = counts.n_truth
    fraction = truth_px / tissue_px if tissue_px else None
    row: dict[str, Any] = {
        "tp": counts.tp,
        "fp": counts.fp,
        "fn": counts.fn,
        "tn": counts.tn,
        "case": case_of(counts),
        **binary_metrics(counts),
        "pearson": pearson(scores, truth_mask, tissue_mask),
        "pixel_auc": pixel_auc(scores, truth_mask, tissue_mask),
        "patch_auc": patch_auc(
            scores,
            truth_mask,
            tissue_mask,
            patch_um=patch_um,
            pixel_um=pixel_um,
            positive_fraction=positive_fraction,
        ),
        "truth_px": truth_px,
        "tissue_px": tissue_px,
        "truth_pct_of_tissue": None if fraction is None else 100.0 * fraction,
        "burden_stratum": burden_stratum(fraction),
    }
    return row
