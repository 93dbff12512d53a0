"""Cohort figures from per-slide metric rows: micro, macro, median, by split and tumour burden.

*Micro* figures pool the pixel counts of every slide (large slides weigh more); *macro* figures
average the per-slide values that are defined (each slide weighs one) and *median* is their
median. Undefined per-slide values (null / NaN) are left out and counted in ``n_undefined``.
Slides without ground truth enter no figure; each row says how many its scope has
(``n_slides_without_truth``, included in ``n_slides``).

Burden strata are short keys (``high``, ``low``, ``very_low``, ``none``); what each means is in
:data:`BURDEN_LABELS` (and in the tables' schema).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, Literal

import numpy as np

from engine.metrics.binary import CASES, Counts, binary_metrics

BurdenStratum = Literal["high", "low", "very_low", "none"]
"""Tumour burden of a slide: share of tissue that is tumour in the ground truth."""

BURDEN_STRATA: Final[tuple[BurdenStratum, ...]] = ("high", "low", "very_low", "none")

BURDEN_LABELS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "high": "tumour > 2 % of tissue",
        "low": "tumour 0.4-2 % of tissue",
        "very_low": "tumour < 0.4 % of tissue (but some)",
        "none": "no tumour in the ground truth",
    }
)
"""What each burden stratum key means, for tables' schemas, the report and charts."""

SCORE_METRICS: Final[tuple[str, ...]] = (
    "iou",
    "dice",
    "precision",
    "recall",
    "specificity",
    "pearson",
    "pixel_auc",
    "patch_auc",
)
"""Per-slide columns summarised with macro (mean) and median figures."""

MICRO_METRICS: Final[tuple[str, ...]] = ("iou", "dice", "precision", "recall", "specificity")
"""Figures computed again from pooled pixel counts (micro)."""

ALL: Final = "all"


def burden_stratum(truth_fraction_of_tissue: float | None) -> BurdenStratum:
    """Burden stratum of a slide from its true tumour fraction of tissue (0..1, not %).

    ``> 0.02`` ``high``, ``0.004 .. 0.02`` (both ends included) ``low``, ``(0, 0.004)``
    ``very_low``; 0 — and ``None``, a slide without tissue — is ``none``.
    """
    f = _value(truth_fraction_of_tissue)
    if f is None or f <= 0.0:
        return "none"
    if f > 1.0:
        raise ValueError(f"truth_fraction_of_tissue must be within 0..1, got {f}")
    if f > 0.02:
        return "high"
    if f >= 0.004:
        return "low"
    return "very_low"


def _value(v: Any) -> float | None:
    """A row value as float, with None / NaN / missing -> None."""
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) else f


def _stratum_of(row: Mapping[str, Any]) -> BurdenStratum:
    stratum = row.get("burden_stratum")
    if stratum is not None:
        for known in BURDEN_STRATA:
            if stratum == known:
                return known
        raise ValueError(f"unknown burden_stratum {stratum!r}; expected one of {BURDEN_STRATA}")
    truth_px = _value(row.get("truth_px"))
    tissue_px = _value(row.get("tissue_px"))
    if truth_px is None or tissue_px is None:
        raise ValueError("a row needs burden_stratum, or truth_px and tissue_px")
    return burden_stratum(truth_px / tissue_px if tissue_px > 0 else None)


def _counts_of(row: Mapping[str, Any]) -> Counts:
    try:
        return Counts(tp=row["tp"], fp=row["fp"], fn=row["fn"], tn=row["tn"])
    except KeyError as exc:
        raise ValueError(f"a per-slide row needs tp, fp, fn and tn; missing {exc}") from None


def scope_name(split: str, burden: str) -> str:
    """``all``, ``split=<s>``, ``burden=<b>`` or ``split=<s>, burden=<b>``."""
    return (
        ", ".join([f"split={split}"] * (split != ALL) + [f"burden={burden}"] * (burden != ALL))
        or ALL
    )


def _scope_rows(
    rows: Sequence[Mapping[str, Any]], split: str, burden: str, n_without_truth: int = 0
) -> list[dict[str, Any]]:
    scope = scope_name(split, burden)
    n = len(rows) + n_without_truth

    def out(statistic: str, value: float | None, n_undefined: int = 0) -> dict[str, Any]:
        return {
            "scope": scope,
            "split": split,
            "burden": burden,
            "statistic": statistic,
            "value": value,
            "n_slides": n,
            "n_slides_without_truth": n_without_truth,
            "n_undefined": n_undefined,
        }

    result = [out("n_slides", float(n))]
    cases = [row.get("case") for row in rows]
    result += [out(f"n_case_{case}", float(cases.count(case))) for case in CASES]

    per_metric = {m: [_value(row.get(m)) for row in rows] for m in SCORE_METRICS}
    undefined = {m: sum(v is None for v in values) for m, values in per_metric.items()}

    pooled = sum((_counts_of(row) for row in rows), Counts(0, 0, 0, 0))
    micro = binary_metrics(pooled)
    result += [out(f"micro_{m}", micro[m], undefined[m]) for m in MICRO_METRICS]
    for m, values in per_metric.items():
        defined = [v for v in values if v is not None]
        result.append(out(f"macro_{m}", float(np.mean(defined)) if defined else None, undefined[m]))
        result.append(
            out(f"median_{m}", float(np.median(defined)) if defined else None, undefined[m])
        )
    return result


HEADLINE_SPLIT: Final = "test"


def headline_split(rows: Sequence[Mapping[str, Any]]) -> str:
    """The split a cohort's figures are headlined with: ``test`` when the cohort has one (slides
    that did not fit the threshold), else ``all``. The report and the CLI both use this."""
    return HEADLINE_SPLIT if any(r.get("split") == HEADLINE_SPLIT for r in rows) else ALL


def has_truth(row: Mapping[str, Any], truth_key: str = "has_ground_truth") -> bool:
    """Whether a per-slide row had ground truth (a row without ``truth_key`` is taken to)."""
    return row.get(truth_key) is not False


def cohort_summary(
    per_slide_rows: Sequence[Mapping[str, Any]],
    *,
    split_key: str = "split",
    truth_key: str = "has_ground_truth",
) -> list[dict[str, Any]]:
    """Long-format cohort table: one row per (scope, statistic).

    Each input row with ground truth needs ``tp``, ``fp``, ``fn``, ``tn`` and either
    ``burden_stratum`` or ``truth_px`` and ``tissue_px``; it may carry ``case``, ``split_key``
    and the per-slide columns in :data:`SCORE_METRICS` (missing or NaN = undefined). A row whose
    ``truth_key`` is ``False`` had no ground truth: it enters no figure and is only counted.

    Scopes: ``all``; each split (rows without a split count only in ``all``); each burden
    stratum; each split × stratum. Empty scopes are left out. Output columns: ``scope``,
    ``split``, ``burden`` (``"all"`` when not restricted), ``statistic``, ``value`` (float or
    ``None``), ``n_slides`` (slides in the scope, with or without ground truth),
    ``n_slides_without_truth`` (of those, slides without ground truth: in no figure; always 0
    in a burden scope, as the stratum comes from the truth) and ``n_undefined`` (slides with
    truth whose per-slide value of that metric is null). Statistics: ``n_slides``,
    ``n_case_<case>``, ``micro_<m>`` (pooled counts), ``macro_<m>`` and ``median_<m>`` (over
    slides with a defined value).
    """
    without = [row for row in per_slide_rows if not has_truth(row, truth_key)]
    per_slide_rows = [row for row in per_slide_rows if has_truth(row, truth_key)]
    strata = [_stratum_of(row) for row in per_slide_rows]
    splits = [row.get(split_key) for row in per_slide_rows]
    without_splits = [row.get(split_key) for row in without]
    split_names = sorted({str(s) for s in [*splits, *without_splits] if s is not None})

    def n_without(split: str, burden: str) -> int:
        if burden != ALL:
            return 0
        return sum(split == ALL or (s is not None and str(s) == split) for s in without_splits)

    def subset(split: str, burden: str) -> list[Mapping[str, Any]]:
        return [
            row
            for row, s, b in zip(per_slide_rows, splits, strata, strict=True)
            if (split == ALL or (s is not None and str(s) == split))
            and (burden == ALL or b == burden)
        ]

    table: list[dict[str, Any]] = []
    for split in [ALL, *split_names]:
        for burden in [ALL, *BURDEN_STRATA]:
            rows = subset(split, burden)
            missing = n_without(split, burden)
            if rows or missing or (split == ALL and burden == ALL):
                table += _scope_rows(rows, split, burden, missing)
    return table
