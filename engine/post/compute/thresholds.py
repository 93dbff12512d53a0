"""Threshold sweeps from mergeable counts, and the threshold fit on the calibration split.

A pixel is predicted positive when ``score >= threshold`` (compared in float64, NaN never
positive: see :func:`apply_threshold`). For a grid of thresholds, :class:`SweepCounts` holds
tp/fp/fn/tn at every grid point. Counts of slides add up, so a cohort sweep is a sum of
per-slide counts and never needs all pixels at once; one slide costs one ``searchsorted`` and
one ``bincount``, not a pass per threshold.

Valid pixels with a NaN score count as predicted negative at every threshold, so the sweep
agrees exactly with ``confusion_counts(apply_threshold(scores, t), truth, valid)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from engine.errors import SlideFleetError
from engine.metrics.binary import Counts, as_mask, valid_mask

Objective = Literal["iou", "f1", "youden"]
OBJECTIVES: Final[tuple[Objective, ...]] = ("iou", "f1", "youden")

GridKind = Literal["probability", "zscore"]


class ThresholdFitError(SlideFleetError, ValueError):
    """No threshold on the grid is better than trivial on the calibration pixels.

    The calibration split has no tumour (or no non-tumour) pixel, or the objective is undefined
    or zero at every grid point. Add slides with ground truth to the calibration split.
    """


def default_grid(kind: GridKind = "probability") -> NDArray[np.float64]:
    """Threshold grid: probabilities 0..1 in steps of 0.01 (101 points), z-scores -4..8 in 0.05."""
    if kind == "probability":
        return np.round(np.linspace(0.0, 1.0, 101), 10)
    if kind == "zscore":
        return np.round(np.linspace(-4.0, 8.0, 241), 10)
    raise ValueError(f"unknown grid kind {kind!r}; expected 'probability' or 'zscore'")


def apply_threshold(scores: ArrayLike, threshold: float) -> NDArray[np.bool_]:
    """``scores >= threshold`` compared in float64 (as the sweep does); NaN is never positive."""
    s = np.asarray(scores)
    with np.errstate(invalid="ignore"):
        return np.asarray(s.astype(np.float64, copy=False) >= float(threshold))


def _check_grid(grid: ArrayLike) -> NDArray[np.float64]:
    g = np.asarray(grid, dtype=np.float64)
    if g.ndim != 1 or g.size == 0:
        raise ValueError("grid must be a non-empty 1-D array")
    if not np.all(np.isfinite(g)) or np.any(np.diff(g) <= 0):
        raise ValueError("grid must be finite and strictly increasing")
    return g


@dataclass(frozen=True, eq=False)
class SweepCounts:
    """tp, fp, fn, tn (int64) at each threshold of ``grid``; ``+`` merges slides."""

    grid: NDArray[np.float64]
    tp: NDArray[np.int64]
    fp: NDArray[np.int64]
    fn: NDArray[np.int64]
    tn: NDArray[np.int64]

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", _check_grid(self.grid))
        for name in ("tp", "fp", "fn", "tn"):
            arr = np.asarray(getattr(self, name), dtype=np.int64)
            if arr.shape != self.grid.shape:
                raise ValueError(f"{name} has shape {arr.shape}, grid {self.grid.shape}")
            object.__setattr__(self, name, arr)

    @classmethod
    def empty(cls, grid: ArrayLike) -> SweepCounts:
        """All-zero counts on ``grid`` (the start of a sum)."""
        g = _check_grid(grid)
        zero = np.zeros(g.shape, dtype=np.int64)
        return cls(g, zero, zero.copy(), zero.copy(), zero.copy())

    @classmethod
    def from_slide(
        cls, scores: ArrayLike, truth: ArrayLike, valid: ArrayLike | None, grid: ArrayLike
    ) -> SweepCounts:
        """Counts of one slide's valid pixels at every threshold of ``grid``."""
        g = _check_grid(grid)
        s = np.asarray(scores)
        t = as_mask(truth, "truth")
        if s.shape != t.shape:
            raise ValueError(f"scores has shape {s.shape}, truth {t.shape}")
        v = valid_mask(valid, s.shape)
        sv = s[v].astype(np.float64)
        tv = t[v]
        # bin k+1 holds scores in [grid[k], grid[k+1]); bin 0 is below the grid. NaN sorts
        # above every grid value in searchsorted, so send it to bin 0 (never positive).
        bins = np.searchsorted(g, sv, side="right")
        bins[np.isnan(sv)] = 0
        n_bins = g.size + 1
        pos = np.bincount(bins[tv], minlength=n_bins)
        neg = np.bincount(bins[~tv], minlength=n_bins)
        # positives at threshold k: scores >= grid[k], i.e. bins k+1 .. end.
        tp = np.cumsum(pos[::-1])[::-1][1:]
        fp = np.cumsum(neg[::-1])[::-1][1:]
        n_pos = int(pos.sum())
        n_neg = int(neg.sum())
        return cls(g, tp, fp, n_pos - tp, n_neg - fp)

    def __add__(self, other: SweepCounts) -> SweepCounts:
        if not isinstance(other, SweepCounts):
            return NotImplemented
        if not np.array_equal(self.grid, other.grid):
            raise ValueError("cannot add SweepCounts on different threshold grids")
        return SweepCounts(
            self.grid,
            self.tp + other.tp,
            self.fp + other.fp,
            self.fn + other.fn,
            self.tn + other.tn,
        )

    def __radd__(self, other: object) -> SweepCounts:
        # Lets ``sum(per_slide_counts)`` start from its default 0.
        if other == 0:
            return self
        if isinstance(other, SweepCounts):
            return other + self
        return NotImplemented

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SweepCounts):
            return NotImplemented
        return all(
            np.array_equal(getattr(self, n), getattr(other, n))
            for n in ("grid", "tp", "fp", "fn", "tn")
        )

    __hash__ = None  # type: ignore[assignment]

    def at(self, index: int) -> Counts:
        """Counts at grid point ``index``."""
        return Counts(
            tp=int(self.tp[index]),
            fp=int(self.fp[index]),
            fn=int(self.fn[index]),
            tn=int(self.tn[index]),
        )


def _ratio(num: NDArray[np.int64], den: NDArray[np.int64]) -> NDArray[np.float64]:
    """Elementwise ``num / den`` with NaN where ``den == 0``."""
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _curves(c: SweepCounts) -> dict[str, NDArray[np.float64]]:
    precision = _ratio(c.tp, c.tp + c.fp)
    recall = _ratio(c.tp, c.tp + c.fn)
    specificity = _ratio(c.tn, c.tn + c.fp)
    return {
        "iou": _ratio(c.tp, c.tp + c.fp + c.fn),
        "f1": _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn),
        "youden": recall + specificity - 1.0,
        "precision": precision,
        "recall": recall,
    }


def objective_curve(counts: SweepCounts, objective: Objective) -> NDArray[np.float64]:
    """The objective at every grid point, NaN where undefined."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; expected one of {OBJECTIVES}")
    return _curves(counts)[objective]


def sweep_table(counts: SweepCounts) -> list[dict[str, Any]]:
    """The sweep curve, one row per threshold: counts, IoU, F1, Youden, precision, recall.

    Undefined figures are ``None``.
    """
    curves = _curves(counts)
    rows: list[dict[str, Any]] = []
    for i, threshold in enumerate(counts.grid.tolist()):
        row: dict[str, Any] = {
            "threshold": threshold,
            "tp": int(counts.tp[i]),
            "fp": int(counts.fp[i]),
            "fn": int(counts.fn[i]),
            "tn": int(counts.tn[i]),
        }
        for name in ("iou", "f1", "youden", "precision", "recall"):
            value = float(curves[name][i])
            row[name] = None if np.isnan(value) else value
        rows.append(row)
    return rows


def _best(counts: SweepCounts, objective: Objective) -> tuple[int, float] | None:
    """Grid index and value of the best objective, or ``None`` when nothing beats trivial.

    Ties: the middle of the first run of equal best values, i.e. the threshold farthest from
    the calibration scores on either side of a plateau.
    """
    n_pos = int(counts.tp[0] + counts.fn[0])
    n_neg = int(counts.fp[0] + counts.tn[0])
    if n_pos == 0 or (objective == "youden" and n_neg == 0):
        return None
    curve = objective_curve(counts, objective)
    if np.all(np.isnan(curve)):
        return None
    best = float(np.nanmax(curve))
    if best <= 0.0:
        return None
    hits = curve == best
    start = int(np.argmax(hits))
    end = start
    while end + 1 < hits.size and hits[end + 1]:
        end += 1
    index = start + (end - start) // 2
    return index, best


def fit_threshold(counts: SweepCounts, objective: Objective) -> float:
    """The grid threshold that maximises ``objective`` on ``counts`` (the calibration split).

    Raises :class:`ThresholdFitError` when the counts have no tumour pixel (or, for Youden, no
    non-tumour pixel) or no threshold scores above zero.
    """
    found = _best(counts, objective)
    if found is None:
        n_pos = int(counts.tp[0] + counts.fn[0])
        n_neg = int(counts.fp[0] + counts.tn[0])
        raise ThresholdFitError(
            f"cannot fit a {objective} threshold: {n_pos} tumour and {n_neg} non-tumour "
            f"calibration pixels, and no grid threshold gives a {objective} above 0"
        )
    return float(counts.grid[found[0]])


def oracle_threshold(
    scores: ArrayLike,
    truth: ArrayLike,
    valid: ArrayLike | None,
    grid: ArrayLike,
    objective: Objective,
) -> tuple[float | None, float | None]:
    """Best threshold for this slide alone and its objective value; ``(None, None)`` if none.

    An oracle looks at the slide's own truth: report it only in columns named ``oracle_*``
    (see :func:`oracle_columns`), never as the method's result.
    """
    counts = SweepCounts.from_slide(scores, truth, valid, grid)
    found = _best(counts, objective)
    if found is None:
        return None, None
    return float(counts.grid[found[0]]), found[1]


def oracle_columns(
    scores: ArrayLike,
    truth: ArrayLike,
    valid: ArrayLike | None,
    grid: ArrayLike,
    objectives: tuple[Objective, ...] = ("iou",),
) -> dict[str, float | None]:
    """Per-slide oracle figures, named ``oracle_<objective>_threshold`` and ``oracle_<objective>``."""
    counts = SweepCounts.from_slide(scores, truth, valid, grid)
    out: dict[str, float | None] = {}
    for objective in objectives:
        found = _best(counts, objective)
        out[f"oracle_{objective}_threshold"] = (
            None if found is None else float(counts.grid[found[0]])
        )
        out[f"oracle_{objective}"] = None if found is None else found[1]
    return out
