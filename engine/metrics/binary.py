"""Binary segmentation metrics of one slide: pixel counts, overlap scores, Pearson, pixel/patch AUC.

Conventions (DESIGN.md, "Metrics conventions"):

* Pixels count only where ``valid`` is true (usually the tissue mask, ``None`` = everywhere).
* A metric whose denominator is zero is ``None`` — never a silent 1.0 or 0.0 — and
  :func:`case_of` says why (``both_empty``, ``fp_only``, ...).
* Score-based metrics (Pearson, AUCs) use the valid pixels whose score is finite.

Pure numpy: scikit-learn is a test dependency only; the tests check every function here against
it on random masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

Case = Literal["both_empty", "fp_only", "fn_only", "disjoint", "overlap"]
"""Why overlap metrics look the way they do; see :func:`case_of`."""

CASES: Final[tuple[Case, ...]] = ("both_empty", "fp_only", "fn_only", "disjoint", "overlap")

BINARY_METRICS: Final[tuple[str, ...]] = ("iou", "dice", "precision", "recall", "specificity")
"""Keys of :func:`binary_metrics`, in order."""


@dataclass(frozen=True, slots=True)
class Counts:
    """Pixel confusion counts of a binary prediction; ``+`` pools them (micro averaging)."""

    tp: int
    fp: int
    fn: int
    tn: int

    def __post_init__(self) -> None:
        for name in ("tp", "fp", "fn", "tn"):
            value = getattr(self, name)
            if int(value) != value or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
            object.__setattr__(self, name, int(value))

    def __add__(self, other: Counts) -> Counts:
        if not isinstance(other, Counts):
            return NotImplemented
        return Counts(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn
        )

    def __radd__(self, other: object) -> Counts:
        # Lets ``sum(counts_list)`` start from its default 0.
        if other == 0:
            return self
        if isinstance(other, Counts):
            return other + self
        return NotImplemented

    @property
    def n_pred(self) -> int:
        """Predicted positive pixels."""
        return self.tp + self.fp

    @property
    def n_truth(self) -> int:
        """Ground-truth positive pixels."""
        return self.tp + self.fn

    @property
    def n(self) -> int:
        """All counted (valid) pixels."""
        return self.tp + self.fp + self.fn + self.tn


def as_mask(array: ArrayLike, name: str) -> NDArray[np.bool_]:
    """A boolean mask from a bool or integer array (non-zero = true); floats are refused.

    Floats are ambiguous (is NaN true? is 0.5?), so score maps must be thresholded first.
    """
    arr = np.asarray(array)
    if arr.dtype == np.bool_:
        return arr
    if np.issubdtype(arr.dtype, np.integer):
        nonzero: NDArray[np.bool_] = arr != 0
        return nonzero
    raise TypeError(f"{name} must be a bool or integer mask, got dtype {arr.dtype}")


def valid_mask(valid: ArrayLike | None, shape: tuple[int, ...]) -> NDArray[np.bool_]:
    """``valid`` as a bool mask of ``shape`` (``None`` = every pixel is valid)."""
    if valid is None:
        return np.ones(shape, dtype=bool)
    out = as_mask(valid, "valid")
    if out.shape != shape:
        raise ValueError(f"valid has shape {out.shape}, expected {shape}")
    return out


def _same_shape(**arrays: NDArray[np.generic]) -> tuple[int, ...]:
    shapes = {name: a.shape for name, a in arrays.items()}
    first = next(iter(shapes.values()))
    if any(s != first for s in shapes.values()):
        raise ValueError(f"arrays must have one shape, got {shapes}")
    return first


def confusion_counts(pred: ArrayLike, truth: ArrayLike, valid: ArrayLike | None = None) -> Counts:
    """Pixel counts (tp, fp, fn, tn) of ``pred`` against ``truth`` over ``valid`` pixels."""
    p = as_mask(pred, "pred")
    t = as_mask(truth, "truth")
    shape = _same_shape(pred=p, truth=t)
    v = valid_mask(valid, shape)
    code = (p[v].astype(np.uint8) << 1) | t[v].astype(np.uint8)
    tn, fn, fp, tp = np.bincount(code, minlength=4).tolist()
    return Counts(tp=tp, fp=fp, fn=fn, tn=tn)


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``, or ``None`` when the denominator is zero (undefined)."""
    return None if denominator == 0 else float(numerator) / float(denominator)


def binary_metrics(counts: Counts) -> dict[str, float | None]:
    """IoU, Dice, precision, recall and specificity; each ``None`` when undefined.

    Undefined means a zero denominator: IoU/Dice when both prediction and truth are empty,
    precision with no predicted pixel, recall with no true pixel, specificity with no true
    negative pixel. An empty truth with a non-empty prediction gives IoU 0 (defined).
    """
    c = counts
    return {
        "iou": ratio(c.tp, c.tp + c.fp + c.fn),
        "dice": ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn),
        "precision": ratio(c.tp, c.tp + c.fp),
        "recall": ratio(c.tp, c.tp + c.fn),
        "specificity": ratio(c.tn, c.tn + c.fp),
    }


def case_of(counts: Counts) -> Case:
    """Which of the five overlap cases a slide is in.

    ``both_empty``: no predicted and no true pixel (IoU/Dice undefined);
    ``fp_only``: empty truth, some prediction; ``fn_only``: empty prediction, some truth;
    ``disjoint``: both non-empty, no overlap; ``overlap``: at least one true positive.
    """
    if counts.tp > 0:
        return "overlap"
    if counts.fp == 0 and counts.fn == 0:
        return "both_empty"
    if counts.fn == 0:
        return "fp_only"
    if counts.fp == 0:
        return "fn_only"
    return "disjoint"


def _scored(
    scores: ArrayLike, truth: ArrayLike, valid: ArrayLike | None
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Finite scores and their truth labels over the valid pixels, as 1-D arrays."""
    s = np.asarray(scores)
    if not np.issubdtype(s.dtype, np.floating) and not np.issubdtype(s.dtype, np.integer):
        raise TypeError(f"scores must be numeric, got dtype {s.dtype}")
    t = as_mask(truth, "truth")
    shape = _same_shape(scores=s, truth=t)
    v = valid_mask(valid, shape)
    s = s.astype(np.float64, copy=False)
    keep = v & np.isfinite(s)
    return s[keep], t[keep]


def pearson(scores: ArrayLike, truth: ArrayLike, valid: ArrayLike | None = None) -> float | None:
    """Pearson correlation of score and truth mask (point-biserial) over valid, finite pixels.

    ``None`` with fewer than two pixels or when either the scores or the truth are constant.
    """
    s, t = _scored(scores, truth, valid)
    if s.size < 2 or not t.any() or t.all() or s.min() == s.max():
        return None
    sc = s - s.mean()
    tc = t - t.mean()
    denom = np.sqrt(np.dot(sc, sc) * np.dot(tc, tc))
    if denom == 0:
        return None
    return float(np.clip(np.dot(sc, tc) / denom, -1.0, 1.0))


def auc_from_samples(positive: ArrayLike, negative: ArrayLike) -> float | None:
    """Exact ROC AUC of positive vs negative scores (Mann-Whitney U / (P·N), ties count half).

    For every positive, the negatives strictly below it and the ties are counted with two
    ``searchsorted`` calls on the sorted negatives: O((P + N) log N), exact, no rank arrays.
    ``None`` when either class is empty.
    """
    pos = np.asarray(positive, dtype=np.float64).ravel()
    neg = np.sort(np.asarray(negative, dtype=np.float64).ravel())
    if pos.size == 0 or neg.size == 0:
        return None
    below = np.searchsorted(neg, pos, side="left")
    at_or_below = np.searchsorted(neg, pos, side="right")
    # Twice U in integers (exact up to ~4e18 pixel pairs), halved once at the end.
    twice_u = int(below.sum(dtype=np.int64)) + int(at_or_below.sum(dtype=np.int64))
    return twice_u / (2.0 * pos.size * neg.size)


def pixel_auc(scores: ArrayLike, truth: ArrayLike, valid: ArrayLike | None = None) -> float | None:
    """Exact pixel-level ROC AUC over valid, finite-score pixels; ``None`` if a class is absent.

    Rank-based (Mann-Whitney, ties count half), equal to ``sklearn.metrics.roc_auc_score``.
    It sorts the pixels once, so a 10⁷-pixel map takes about a second; no approximation.
    """
    s, t = _scored(scores, truth, valid)
    return auc_from_samples(s[t], s[~t])


def patch_um_to_px(patch_um: float, pixel_um: float) -> int:
    """Patch side in whole grid pixels (rounded), at least 1."""
    if patch_um <= 0 or pixel_um <= 0:
        raise ValueError(f"patch_um and pixel_um must be positive, got {patch_um}, {pixel_um}")
    patch_px = int(round(patch_um / pixel_um))
    if patch_px < 1:
        raise ValueError(f"patch_um={patch_um} is smaller than one {pixel_um} µm grid pixel")
    return patch_px


def patch_scores(
    scores: ArrayLike,
    truth: ArrayLike,
    valid: ArrayLike | None = None,
    *,
    patch_um: float,
    pixel_um: float,
    positive_fraction: float | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Per-patch score and label on a grid of square patches anchored at the map's top-left.

    A patch is ``patch_um`` wide (rounded to whole ``pixel_um`` grid pixels; edge patches may be
    partial). Only valid pixels with a finite score take part; patches without any are dropped.
    Patch score: the maximum pixel score (what a patch classifier's "is there tumour" answers).
    Patch label: positive if any of its pixels is tumour (``positive_fraction=None``), else if
    at least ``positive_fraction`` of them are.
    """
    if positive_fraction is not None and not 0.0 < positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction must be in (0, 1], got {positive_fraction}")
    p = patch_um_to_px(patch_um, pixel_um)
    s = np.asarray(scores)
    t = as_mask(truth, "truth")
    shape = _same_shape(scores=s, truth=t)
    if len(shape) != 2:
        raise ValueError(f"patch AUC needs 2-D maps, got shape {shape}")
    s = s.astype(np.float64)
    v = valid_mask(valid, shape) & np.isfinite(s)
    h, w = shape
    nh, nw = -(-h // p), -(-w // p)
    pad = ((0, nh * p - h), (0, nw * p - w))
    s_blocks = np.pad(np.where(v, s, -np.inf), pad, constant_values=-np.inf).reshape(nh, p, nw, p)
    v_blocks = np.pad(v, pad).reshape(nh, p, nw, p)
    t_blocks = np.pad(t & v, pad).reshape(nh, p, nw, p)
    n_valid = v_blocks.sum(axis=(1, 3))
    n_pos = t_blocks.sum(axis=(1, 3))
    keep = n_valid > 0
    patch_score = s_blocks.max(axis=(1, 3))[keep]
    if positive_fraction is None:
        label = n_pos[keep] > 0
    else:
        label = n_pos[keep] >= positive_fraction * n_valid[keep]
    return patch_score, label


def patch_auc(
    scores: ArrayLike,
    truth: ArrayLike,
    valid: ArrayLike | None = None,
    *,
    patch_um: float,
    pixel_um: float,
    positive_fraction: float | None = None,
) -> float | None:
    """ROC AUC of patch scores vs patch labels (see :func:`patch_scores` for the rule).

    ``None`` when all patches have one label.
    """
    score, label = patch_scores(
        scores,
        truth,
        valid,
        patch_um=patch_um,
        pixel_um=pixel_um,
        positive_fraction=positive_fraction,
    )
    return auc_from_samples(score[label], score[~label])
