"""Slide-level figures from per-slide rows: AUC with bootstrap CI, accuracy, kappa, confusion."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.metrics.slide_level import (
    accuracy,
    balanced_accuracy,
    class_confusion,
    quadratic_weighted_kappa,
    slide_auc_interval,
)

SPLIT_ORDER = ("test", "calibration", "train")


def _row(
    source: str,
    model_id: str,
    split: str,
    statistic: str,
    n: int,
    value: float | None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "source": source,
        "model_id": model_id,
        "split": split,
        "statistic": statistic,
        "value": value,
        "n_slides": n,
        "low": None,
        "high": None,
        "true_class": None,
        "predicted_class": None,
        "resamples": None,
        **extra,
    }


def slide_metric_rows(
    source: str,
    model_id: str,
    rows: Sequence[dict[str, Any]],
    class_names: Sequence[str],
    positive_class: str,
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """``slide_metrics`` rows for every split present and for ``all`` labelled slides.

    Each row needs ``true_label``, ``split`` and ``score`` (the positive class's probability, or a
    map's maximum); ``predicted_class`` (may be ``None``) adds accuracy, balanced accuracy,
    quadratic-weighted kappa and the confusion matrix. Slides without a known label are left out.
    """
    labelled = [r for r in rows if r.get("true_label") in class_names]
    groups: list[tuple[str, list[dict[str, Any]]]] = [("all", labelled)]
    for split in SPLIT_ORDER:
        members = [r for r in labelled if r.get("split") == split]
        if members:
            groups.append((split, members))
    out: list[dict[str, Any]] = []
    for split, members in groups:
        if not members:
            continue
        n = len(members)
        truth = np.array([class_names.index(r["true_label"]) for r in members])
        scores = np.array(
            [np.nan if r["score"] is None else r["score"] for r in members], np.float64
        )
        positive = truth == class_names.index(positive_class)
        auc = (
            slide_auc_interval(
                positive, np.nan_to_num(scores, nan=-np.inf), resamples=resamples, seed=seed
            )
            if resamples
            else None
        )
        if auc is not None:
            out.append(
                _row(
                    source,
                    model_id,
                    split,
                    "auc",
                    n,
                    auc.auc,
                    low=auc.low,
                    high=auc.high,
                    resamples=auc.resamples,
                )
            )
        if any(r.get("predicted_class") is None for r in members):
            continue
        predicted = np.array([class_names.index(r["predicted_class"]) for r in members])
        cm = class_confusion(truth, predicted, len(class_names))
        out.append(_row(source, model_id, split, "accuracy", n, accuracy(cm)))
        out.append(_row(source, model_id, split, "balanced_accuracy", n, balanced_accuracy(cm)))
        out.append(
            _row(
                source, model_id, split, "quadratic_weighted_kappa", n, quadratic_weighted_kappa(cm)
            )
        )
        for i, true_name in enumerate(class_names):
            for j, predicted_name in enumerate(class_names):
                out.append(
                    _row(
                        source,
                        model_id,
                        split,
                        "confusion",
                        n,
                        float(cm[i, j]),
                        true_class=true_name,
                        predicted_class=predicted_name,
                    )
                )
    return out
