"""Slide-level evaluation: one answer per slide (tumour present? which grade?) against its label.

- Binary (CAMELYON16 task 1): ROC AUC of a per-slide score (a MIL probability, or a score map's
  maximum) with a percentile bootstrap 95 % confidence interval over slides.
- Multi-class and ordinal (PANDA's ISUP grades): accuracy, balanced accuracy (mean per-class
  recall), confusion matrix, and quadratic-weighted Cohen's kappa, PANDA's metric.

Pure functions on arrays; undefined figures are ``None``, never a silent 0 or 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from engine.metrics.binary import auc_from_samples


@dataclass(frozen=True)
class AucWithInterval:
    """ROC AUC with a percentile bootstrap interval (``None`` bounds: too few usable resamples)."""

    auc: float | None
    low: float | None
    high: float | None
    confidence: float
    resamples: int  # resamples that held both classes (the others are skipped)


def _binary_labels(labels: ArrayLike) -> NDArray[np.bool_]:
    array = np.asarray(labels)
    if array.dtype != np.bool_:
        values = set(np.unique(array).tolist())
        if not values <= {0, 1}:
            raise ValueError(f"slide labels must be 0/1 or boolean, got values {sorted(values)}")
    return array.astype(bool).ravel()


def slide_auc(labels: ArrayLike, scores: ArrayLike) -> float | None:
    """ROC AUC of per-slide scores against 0/1 labels (ties count half); ``None`` if a class is absent."""
    truth = _binary_labels(labels)
    score = np.asarray(scores, np.float64).ravel()
    if truth.shape != score.shape:
        raise ValueError(f"{truth.size} labels but {score.size} scores")
    return auc_from_samples(score[truth], score[~truth])


def slide_auc_interval(
    labels: ArrayLike,
    scores: ArrayLike,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> AucWithInterval:
    """Slide AUC and its percentile bootstrap interval: slides are resampled with replacement.

    Resamples that hold only one class have no AUC and are skipped (their number is reported);
    with fewer than 100 usable resamples the interval is ``None``.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    truth = _binary_labels(labels)
    score = np.asarray(scores, np.float64).ravel()
    point = slide_auc(truth, score)
    if point is None:
        return AucWithInterval(None, None, None, confidence, 0)
    rng = np.random.default_rng(seed)
    values: list[float] = []
    for _ in range(resamples):
        pick = rng.integers(0, truth.size, truth.size)
        auc = auc_from_samples(score[pick][truth[pick]], score[pick][~truth[pick]])
        if auc is not None:
            values.append(auc)
    if len(values) < 100:
        return AucWithInterval(point, None, None, confidence, len(values))
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.asarray(values), [tail, 1.0 - tail])
    return AucWithInterval(point, float(low), float(high), confidence, len(values))


def class_confusion(
    true_class: ArrayLike, predicted_class: ArrayLike, n_classes: int
) -> NDArray[np.int64]:
    """``(n_classes, n_classes)`` slide confusion matrix, rows = true class, columns = predicted."""
    truth = np.asarray(true_class, np.int64).ravel()
    predicted = np.asarray(predicted_class, np.int64).ravel()
    if truth.shape != predicted.shape:
        raise ValueError(f"{truth.size} true classes but {predicted.size} predictions")
    for name, values in (("true", truth), ("predicted", predicted)):
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            raise ValueError(f"{name} classes must lie in 0..{n_classes - 1}")
    counts = np.bincount(truth * n_classes + predicted, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes).astype(np.int64)


def accuracy(confusion: ArrayLike) -> float | None:
    matrix = np.asarray(confusion, np.float64)
    total = matrix.sum()
    return float(np.trace(matrix) / total) if total > 0 else None


def balanced_accuracy(confusion: ArrayLike) -> float | None:
    """Mean recall over the classes that occur in the truth (scikit-learn's definition)."""
    matrix = np.asarray(confusion, np.float64)
    support = matrix.sum(axis=1)
    present = support > 0
    if not present.any():
        return None
    return float(np.mean(np.diag(matrix)[present] / support[present]))


def quadratic_weighted_kappa(confusion: ArrayLike) -> float | None:
    """Cohen's kappa with quadratic weights ``(i - j)² / (K - 1)²`` on an ordinal confusion matrix.

    ``None`` when the expected disagreement is zero (e.g. every slide in one class on both sides).
    """
    observed = np.asarray(confusion, np.float64)
    n_classes = observed.shape[0]
    total = observed.sum()
    if total == 0 or n_classes < 2:
        return None
    index = np.arange(n_classes)
    weights = (index[:, None] - index[None, :]) ** 2 / (n_classes - 1) ** 2
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / total
    expected_disagreement = float((weights * expected).sum())
    if expected_disagreement == 0:
        return None
    return 1.0 - float((weights * observed).sum()) / expected_disagreement
