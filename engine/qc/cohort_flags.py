"""Cohort-level QC: robust z-scores of each measure and flags with reasons a curator can read.

A slide is compared with its cohort by the robust z-score ``(x - median) / (1.4826 · MAD)``, which
one bad slide cannot drag the way it drags a mean and standard deviation. A measure is flagged when
``|z|`` exceeds ``z_limit`` in the direction that means trouble (blur: lower sharpness; pen: more
ink) *and* it differs from the median by at least the rule's ``min_difference`` (so when most
slides share one value, a trace of debris is not an infinitely rare event), or when an absolute
limit is crossed whatever the cohort looks like (a cohort where every slide carries pen marks is
still a cohort with pen marks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Direction = Literal["high", "low", "both"]


@dataclass(frozen=True)
class MeasureRule:
    """How one measure is judged: the flag it raises, its bad direction and an absolute limit."""

    measure: str
    flag: str
    direction: Direction
    absolute_limit: float | None = None  # crossing it (in the bad direction) always flags
    what: str = ""
    min_difference: float = 0.0  # smallest |value - median| worth a cohort flag


#: Slide-QC rules (measures of :class:`engine.qc.slide_quality.SlideQuality`).
SLIDE_RULES: tuple[MeasureRule, ...] = (
    MeasureRule(
        "blurred_tile_fraction", "blur", "high", 0.25, "share of tissue tiles out of focus", 0.1
    ),
    MeasureRule("laplacian_var_median", "blur", "low", None, "median sharpness of tissue tiles"),
    MeasureRule("pen_fraction", "pen", "high", 0.005, "share of the slide under pen ink", 0.002),
    MeasureRule("dark_fraction", "debris", "high", 0.02, "share of near-black pixels", 0.005),
    MeasureRule(
        "white_fraction", "overexposed", "high", None, "share of saturated white pixels", 0.02
    ),
    MeasureRule("tissue_area_mm2", "little_tissue", "low", 0.2, "tissue area in mm²", 0.5),
    MeasureRule("brightness", "brightness", "both", None, "mean luminance on tissue", 0.03),
    MeasureRule("contrast", "contrast", "low", None, "luminance spread on tissue", 0.02),
    MeasureRule("hematoxylin_od", "stain", "both", None, "mean haematoxylin density", 0.03),
    MeasureRule("eosin_od", "stain", "both", None, "mean eosin density", 0.03),
)

#: Annotation-QC rules (measures of :class:`engine.qc.annotation_quality.AnnotationQuality`).
ANNOTATION_RULES: tuple[MeasureRule, ...] = (
    MeasureRule(
        "density_per_mm2_tissue",
        "annotation_density",
        "both",
        None,
        "objects per mm² of tissue",
        0.5,
    ),
    MeasureRule("area_um2_median", "annotation_size", "both", None, "median object area in µm²"),
    MeasureRule("degenerate_objects", "degenerate_annotation", "high", 0.5, "degenerate polygons"),
    MeasureRule(
        "objects_outside_slide", "annotation_outside_slide", "high", 0.5, "objects beyond the slide"
    ),
    MeasureRule(
        "objects_off_tissue", "annotation_off_tissue", "high", 0.5, "objects mostly on glass"
    ),
)


def robust_z(values: Sequence[float | None]) -> list[float | None]:
    """Robust z-score of each value against the others' median and MAD (``None`` stays ``None``).

    With a zero MAD (most slides equal), any value away from the median is infinitely far.
    """
    present = np.array([v for v in values if v is not None and np.isfinite(v)], np.float64)
    if present.size == 0:
        return [None] * len(values)
    median = float(np.median(present))
    scale = 1.4826 * float(np.median(np.abs(present - median)))
    out: list[float | None] = []
    for v in values:
        if v is None or not np.isfinite(v):
            out.append(None)
        elif scale > 0:
            out.append((float(v) - median) / scale)
        else:
            out.append(0.0 if v == median else float(np.sign(float(v) - median)) * np.inf)
    return out


def flag_cohort(
    rows: Sequence[Mapping[str, float | None]],
    rules: Sequence[MeasureRule],
    *,
    z_limit: float = 3.5,
) -> tuple[list[dict[str, float | None]], list[list[str]], list[list[str]]]:
    """Per row: ``z`` of each measure, the flags raised, and one reason per flag.

    Returns ``(z_scores, flags, reasons)``, each a list aligned with ``rows``.
    """
    z_scores: list[dict[str, float | None]] = [{} for _ in rows]
    flags: list[list[str]] = [[] for _ in rows]
    reasons: list[list[str]] = [[] for _ in rows]
    for rule in rules:
        values = [row.get(rule.measure) for row in rows]
        present = [v for v in values if v is not None]
        median = float(np.median(present)) if present else None
        for index, (value, z) in enumerate(zip(values, robust_z(values), strict=True)):
            z_scores[index][rule.measure] = z
            if value is None:
                continue
            why = None
            if rule.absolute_limit is not None and (
                (rule.direction != "low" and value > rule.absolute_limit)
                or (rule.direction == "low" and value < rule.absolute_limit)
            ):
                side = "above" if rule.direction != "low" else "below"
                why = f"{rule.what or rule.measure} {value:.4g} is {side} the limit {rule.absolute_limit:g}"
            elif (
                z is not None
                and median is not None
                and abs(value - median) >= rule.min_difference
                and (
                    (rule.direction in ("high", "both") and z > z_limit)
                    or (rule.direction in ("low", "both") and z < -z_limit)
                )
            ):
                side = "above" if z > 0 else "below"
                why = (
                    f"{rule.what or rule.measure} {value:.4g} is far {side} the cohort median "
                    f"{median:.4g} (robust z {z:+.1f})"
                )
            if why is not None:
                if rule.flag not in flags[index]:
                    flags[index].append(rule.flag)
                reasons[index].append(f"{rule.flag}: {why}")
    return z_scores, flags, reasons
