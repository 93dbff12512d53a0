"""Lesion-level detection metrics: CAMELYON16 task 2 (FROC), as the challenge's evaluation defines it.

The challenge's rules, restated in microns so they hold at any resolution:

- **Evaluation regions.** The tumour annotation is grown by half of 75 µm (a pixel belongs to a
  region when its distance to tumour is under 37.5 µm, so a region's diameter grows by 75 µm, "the
  size of five tumour cells"), holes are filled, and 8-connected components are the lesions.
- **Isolated tumour cells (ITC).** A lesion whose longest diameter, measured after that growth, is
  under 275 µm (200 µm before it) is an ITC: a detection inside it is neither a true nor a false
  positive, and missing it is not a false negative. The longest diameter is the major axis of the
  region's second-moment ellipse (``skimage.measure.regionprops(...).major_axis_length``), as in the
  challenge's script.
- **Hits.** A detection is a point (x, y) with a confidence. Inside a non-ITC lesion it is a true
  positive for that lesion, counted once, with the highest confidence among its hits; outside every
  lesion it is a false positive; every detection on a slide without tumour is a false positive.
- **FROC.** Sweeping a confidence threshold gives sensitivity (hit lesions / all non-ITC lesions of
  the cohort) against the mean number of false positives per slide (over all slides, tumour or not);
  the score is the mean sensitivity at 1/4, 1/2, 1, 2, 4 and 8 false positives per slide, read off
  the curve by linear interpolation.

One deliberate difference from the challenge's script: it sweeps thresholds from the *second*
lowest confidence upward, so the lowest-confidence detection of the whole cohort is never counted.
:func:`froc` counts every detection (``drop_lowest_threshold=True`` reproduces the script).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage
from skimage import measure

#: False positives per slide at which CAMELYON16 reads sensitivity off the FROC curve.
CAMELYON16_FP_RATES: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: Growth of the annotation (diameter), in µm, before lesions are labelled (challenge rule).
CAMELYON16_DILATION_UM = 75.0
#: Longest diameter (after growth), in µm, under which a lesion is an isolated-tumour-cell cluster.
CAMELYON16_ITC_DIAMETER_UM = 275.0


@dataclass(frozen=True)
class LesionMap:
    """Lesions of one slide: a label image (0 = no lesion) on a grid of ``pixel_um`` µm/px.

    ``itc_labels`` are the lesions that count neither as hits nor as misses.
    """

    labels: NDArray[np.int32]
    pixel_um: float
    itc_labels: frozenset[int]

    @property
    def lesion_count(self) -> int:
        """Lesions a detector is expected to find (ITC excluded)."""
        return int(self.labels.max(initial=0)) - len(self.itc_labels)


@dataclass(frozen=True)
class Detection:
    """One detected lesion candidate: its position in the lesion map's pixels and its confidence."""

    x_px: float
    y_px: float
    confidence: float


@dataclass(frozen=True)
class SlideDetections:
    """How one slide's detections fall on its lesions.

    ``lesion_confidence`` maps each non-ITC lesion label to the highest confidence of the detections
    inside it, or ``None`` when none hit it; ``false_positive_confidences`` holds the confidence of
    every detection outside all lesions.
    """

    lesion_confidence: dict[int, float | None]
    false_positive_confidences: tuple[float, ...]
    itc_hits: int = 0
    itc_count: int = 0

    @property
    def lesion_count(self) -> int:
        return len(self.lesion_confidence)


@dataclass(frozen=True)
class FrocResult:
    """The FROC curve of a cohort and its CAMELYON16 summary."""

    fp_per_slide: NDArray[np.float64]  # decreasing thresholds → increasing FPs (starts at 0)
    sensitivity: NDArray[np.float64]
    thresholds: NDArray[np.float64]  # the confidence threshold of each point (inf for the origin)
    fp_rates: tuple[float, ...]
    sensitivity_at: tuple[float, ...]
    slide_count: int
    lesion_count: int

    @property
    def score(self) -> float:
        """Mean sensitivity at the FP rates (the challenge's FROC score)."""
        return float(np.mean(self.sensitivity_at))


def lesion_map(
    tumour: ArrayLike,
    pixel_um: float,
    *,
    dilation_um: float = CAMELYON16_DILATION_UM,
    itc_diameter_um: float = CAMELYON16_ITC_DIAMETER_UM,
) -> LesionMap:
    """Evaluation lesions of a tumour mask sampled at ``pixel_um`` µm/px (challenge rules).

    A pixel joins a lesion when its distance to the nearest tumour pixel is under
    ``dilation_um / 2``; holes are filled; lesions are 8-connected components.
    """
    if not pixel_um > 0:
        raise ValueError(f"pixel_um must be positive, got {pixel_um}")
    mask = np.asarray(tumour).astype(bool, copy=False)
    if mask.ndim != 2:
        raise ValueError(f"tumour mask must be 2-D, got shape {mask.shape}")
    if not mask.any():
        return LesionMap(np.zeros(mask.shape, np.int32), pixel_um, frozenset())
    distance_px = ndimage.distance_transform_edt(~mask)
    grown = ndimage.binary_fill_holes(distance_px < dilation_um / (2.0 * pixel_um))
    labels = measure.label(grown, connectivity=2).astype(np.int32)
    itc = frozenset(
        int(region.label)
        for region in measure.regionprops(labels)
        if region.axis_major_length * pixel_um < itc_diameter_um
    )
    return LesionMap(labels, pixel_um, itc)


def match_detections(detections: Sequence[Detection], lesions: LesionMap | None) -> SlideDetections:
    """Assign one slide's detections to its lesions (``lesions=None``: a slide without tumour).

    A detection outside the map counts as a false positive (it is off the slide's tissue grid).
    """
    if lesions is None:
        return SlideDetections({}, tuple(float(d.confidence) for d in detections))
    height, width = lesions.labels.shape
    best: dict[int, float | None] = {
        label: None
        for label in range(1, int(lesions.labels.max(initial=0)) + 1)
        if label not in lesions.itc_labels
    }
    false_positives: list[float] = []
    itc_hits = 0
    for detection in detections:
        row, col = int(np.floor(detection.y_px)), int(np.floor(detection.x_px))
        inside = 0 <= row < height and 0 <= col < width
        label = int(lesions.labels[row, col]) if inside else 0
        if label == 0:
            false_positives.append(float(detection.confidence))
        elif label in lesions.itc_labels:
            itc_hits += 1
        else:
            previous = best[label]
            if previous is None or detection.confidence > previous:
                best[label] = float(detection.confidence)
    return SlideDetections(best, tuple(false_positives), itc_hits, len(lesions.itc_labels))


def froc(
    slides: Sequence[SlideDetections],
    *,
    fp_rates: Sequence[float] = CAMELYON16_FP_RATES,
    drop_lowest_threshold: bool = False,
) -> FrocResult:
    """FROC curve over a cohort: sensitivity against mean false positives per slide.

    The curve has one point per distinct confidence (thresholds decreasing, a detection counts when
    its confidence is ``>=`` the threshold) plus the origin. Sensitivity at each FP rate is linearly
    interpolated, and held at the last point beyond the curve's end, as ``np.interp`` does in the
    challenge's script.
    """
    if not slides:
        raise ValueError("FROC needs at least one slide")
    lesion_count = sum(slide.lesion_count for slide in slides)
    if lesion_count == 0:
        raise ValueError("FROC is undefined: the cohort has no lesion larger than an ITC cluster")
    hit = np.array(
        [c for slide in slides for c in slide.lesion_confidence.values() if c is not None],
        np.float64,
    )
    false = np.array([c for slide in slides for c in slide.false_positive_confidences], np.float64)
    candidates = [hit, false]
    if drop_lowest_threshold and any(_has_script_zero(slide) for slide in slides):
        # The script's per-lesion list holds 0 for a missed lesion and for every ITC lesion.
        candidates.append(np.zeros(1))
    thresholds = np.unique(np.concatenate(candidates))[::-1]  # decreasing
    if drop_lowest_threshold and thresholds.size:
        thresholds = thresholds[:-1]
    hit_sorted, false_sorted = np.sort(hit), np.sort(false)
    true_counts = hit.size - np.searchsorted(hit_sorted, thresholds, side="left")
    false_counts = false.size - np.searchsorted(false_sorted, thresholds, side="left")
    fp_per_slide = np.concatenate([[0.0], false_counts / len(slides)])
    sensitivity = np.concatenate([[0.0], true_counts / lesion_count])
    at = np.interp(np.asarray(fp_rates, np.float64), fp_per_slide, sensitivity)
    return FrocResult(
        fp_per_slide=fp_per_slide,
        sensitivity=sensitivity,
        thresholds=np.concatenate([[np.inf], thresholds]),
        fp_rates=tuple(float(r) for r in fp_rates),
        sensitivity_at=tuple(float(s) for s in at),
        slide_count=len(slides),
        lesion_count=lesion_count,
    )


def _has_script_zero(slide: SlideDetections) -> bool:
    missed = any(c is None for c in slide.lesion_confidence.values())
    return missed or slide.itc_count > 0


def detections_from_regions(
    scores: ArrayLike, mask: ArrayLike, *, min_confidence: float = 0.0
) -> list[Detection]:
    """One detection per connected region of a predicted mask: the region's highest-scoring pixel.

    The point is the centre of that pixel (``+0.5``), its confidence the score there, so a
    detection lies inside the region it stands for, even for a ring-shaped region whose centroid
    would not.
    """
    score_array = np.asarray(scores, np.float64)
    mask_array = np.asarray(mask).astype(bool, copy=False)
    if score_array.shape != mask_array.shape:
        raise ValueError(f"scores {score_array.shape} and mask {mask_array.shape} differ in shape")
    labels = measure.label(mask_array, connectivity=2)
    count = int(labels.max(initial=0))
    if count == 0:
        return []
    finite = np.where(np.isfinite(score_array), score_array, -np.inf)
    positions = ndimage.maximum_position(finite, labels, index=np.arange(1, count + 1))
    detections = [
        Detection(x_px=col + 0.5, y_px=row + 0.5, confidence=float(finite[row, col]))
        for row, col in positions
    ]
    return [d for d in detections if np.isfinite(d.confidence) and d.confidence >= min_confidence]
