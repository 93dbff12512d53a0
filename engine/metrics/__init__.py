"""Segmentation metrics: pure functions on arrays (no Ray, Dask or zarr here).

``binary``: counts, IoU/Dice/precision/recall, case, Pearson, pixel and patch AUC.
``multiclass``: confusion matrix, per-class IoU/Dice, mIoU, class merge maps.
``slide``: one slide's metrics row. ``cohort``: micro/macro/median by split and burden.
"""

from engine.metrics.binary import (
    CASES,
    Case,
    Counts,
    binary_metrics,
    case_of,
    confusion_counts,
    patch_auc,
    pearson,
    pixel_auc,
)
from engine.metrics.cohort import (
    BURDEN_LABELS,
    BURDEN_STRATA,
    BurdenStratum,
    burden_stratum,
    cohort_summary,
    headline_split,
)
from engine.metrics.multiclass import (
    PANDA_KAROLINSKA_TO_TUMOUR,
    PANDA_RADBOUD_TO_TUMOUR,
    TIGER_7_TO_3,
    ClassMerge,
    confusion_matrix,
    macro_dice,
    merge_classes,
    miou,
    per_class_iou_dice,
)
from engine.metrics.slide import slide_metrics

__all__ = [
    "BURDEN_LABELS",
    "BURDEN_STRATA",
    "CASES",
    "PANDA_KAROLINSKA_TO_TUMOUR",
    "PANDA_RADBOUD_TO_TUMOUR",
    "TIGER_7_TO_3",
    "BurdenStratum",
    "Case",
    "ClassMerge",
    "Counts",
    "binary_metrics",
    "burden_stratum",
    "case_of",
    "cohort_summary",
    "headline_split",
    "confusion_counts",
    "confusion_matrix",
    "macro_dice",
    "merge_classes",
    "miou",
    "patch_auc",
    "pearson",
    "per_class_iou_dice",
    "pixel_auc",
    "slide_metrics",
]
