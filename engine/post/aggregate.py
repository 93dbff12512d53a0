"""Cohort aggregation of ``post``: the ``cohort`` table's rows from the slides' rows (pure).

Binary models: :func:`engine.metrics.cohort_summary` (micro / macro / median by split and
burden). Multi-class models add :func:`multiclass_summary`. Only slides with ground truth enter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from engine.metrics import cohort_summary, macro_dice, miou, per_class_iou_dice
from engine.metrics.cohort import has_truth


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def multiclass_summary(
    rows: Sequence[Mapping[str, Any]], class_names: Sequence[str]
) -> list[dict[str, Any]]:
    """Cohort rows of a multi-class model, long format like :func:`cohort_summary`.

    Per scope (all, each split): ``micro_miou`` / ``micro_macro_dice`` and per-class
    ``micro_iou[<class>]`` / ``micro_dice[<class>]`` from the summed confusion matrix,
    ``macro_miou`` / ``median_miou`` / ``macro_macro_dice`` over slides, and the pooled matrix
    as ``confusion[truth=<class>,pred=<class>]`` pixel counts. Rows without ground truth
    (``has_ground_truth`` false) enter no figure and are counted in ``n_slides`` and
    ``n_slides_without_truth`` of their scope; scopes with no slide with truth are left out.
    """
    without = [r for r in rows if not has_truth(r)]
    rows = [r for r in rows if has_truth(r) and r.get("confusion_matrix") is not None]
    if not rows:
        return []
    splits = sorted({str(r["split"]) for r in rows if r.get("split") is not None})
    out: list[dict[str, Any]] = []
    for split in ["all", *splits]:
        scoped = [r for r in rows if split == "all" or str(r.get("split")) == split]
        n_without = sum(split == "all" or str(r.get("split")) == split for r in without)
        n = len(scoped)

        def stat(
            name: str,
            value: float | None,
            n_undefined: int = 0,
            *,
            _split: str = split,
            _n: int = n,
            _n_without: int = n_without,
        ) -> dict[str, Any]:
            scope = "all" if _split == "all" else f"split={_split}"
            return {
                "scope": scope,
                "split": _split,
                "burden": "all",
                "statistic": name,
                "value": value,
                "n_slides": _n + _n_without,
                "n_slides_without_truth": _n_without,
                "n_undefined": n_undefined,
            }

        cm = np.sum([np.asarray(r["confusion_matrix"], dtype=np.int64) for r in scoped], axis=0)
        iou, dice = per_class_iou_dice(cm)
        out += [stat("micro_miou", miou(cm)), stat("micro_macro_dice", macro_dice(cm))]
        for name, i_value, d_value in zip(class_names, iou, dice, strict=True):
            out += [stat(f"micro_iou[{name}]", i_value), stat(f"micro_dice[{name}]", d_value)]
        for metric in ("miou", "macro_dice"):
            values = [float(r[metric]) for r in scoped if r.get(metric) is not None]
            undefined = n - len(values)
            out.append(
                stat(f"macro_{metric}", float(np.mean(values)) if values else None, undefined)
            )
            out.append(stat(f"median_{metric}", _median(values), undefined))
        for t, truth_name in enumerate(class_names):
            for p, pred_name in enumerate(class_names):
                out.append(stat(f"confusion[truth={truth_name},pred={pred_name}]", float(cm[t, p])))
    return out


def cohort_rows(
    slide_rows: Sequence[Mapping[str, Any]], class_names: Sequence[str]
) -> list[dict[str, Any]]:
    """The ``cohort`` table's rows (without model keys) from every slide's row.

    None when no slide has ground truth; otherwise slides without it are counted in each scope's
    ``n_slides`` and ``n_slides_without_truth`` and enter no figure.
    """
    if not any(r.get("has_ground_truth") for r in slide_rows):
        return []
    rows = [{**r, "has_ground_truth": bool(r.get("has_ground_truth"))} for r in slide_rows]
    return cohort_summary(rows) + multiclass_summary(rows, class_names)


__all__ = ["cohort_rows", "multiclass_summary"]
