"""Lesion-level FROC (CAMELYON16 task 2) and slide-level metrics against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from skimage import measure
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    roc_auc_score,
)

from engine.metrics.lesions import (
    Detection,
    detections_from_regions,
    froc,
    lesion_map,
    match_detections,
)
from engine.metrics.slide_level import (
    accuracy,
    balanced_accuracy,
    class_confusion,
    quadratic_weighted_kappa,
    slide_auc,
    slide_auc_interval,
)


def disk(shape: tuple[int, int], centre_yx: tuple[float, float], radius_px: float) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return (rows + 0.5 - centre_yx[0]) ** 2 + (cols + 0.5 - centre_yx[1]) ** 2 <= radius_px**2


# --- hand-built cases -------------------------------------------------------------------------


def test_itc_rule_uses_275_um_after_75_um_growth() -> None:
    pixel_um = 2.0
    shape = (400, 400)
    small = disk(shape, (100, 100), 95 / pixel_um)  # Ø190 µm → Ø265 µm grown: ITC
    large = disk(shape, (300, 300), 105 / pixel_um)  # Ø210 µm → Ø285 µm grown: a lesion
    lesions = lesion_map(small | large, pixel_um)
    assert lesions.labels.max() == 2
    small_label = int(lesions.labels[100, 100])
    large_label = int(lesions.labels[300, 300])
    assert lesions.itc_labels == frozenset({small_label})
    assert large_label not in lesions.itc_labels
    assert lesions.lesion_count == 1


def test_growth_margin_is_37_5_um_each_side() -> None:
    pixel_um = 1.0
    tumour = disk((800, 800), (400, 400), 200)
    lesions = lesion_map(tumour, pixel_um)
    slide = match_detections(
        [
            Detection(x_px=400 + 220, y_px=400, confidence=0.7),  # 20 µm outside: inside margin
            Detection(x_px=400 - 250, y_px=400, confidence=0.6),  # 50 µm outside: false positive
        ],
        lesions,
    )
    assert list(slide.lesion_confidence.values()) == [0.7]
    assert slide.false_positive_confidences == (0.6,)


def test_merging_within_margin_and_filled_holes() -> None:
    pixel_um = 1.0
    # Two blobs 60 µm apart merge (each grows 37.5 µm); a ring's hole is filled.
    tumour = disk((600, 600), (150, 150), 150) & ~disk((600, 600), (150, 150), 60)
    tumour |= disk((600, 600), (150, 390), 90)  # gap between x=300 and x=300: 0 → touch
    tumour |= disk((600, 600), (470, 470), 100) | disk((600, 600), (470, 230), 100)  # gap 40 µm
    lesions = lesion_map(tumour, pixel_um)
    assert lesions.labels[150, 150] != 0  # hole filled
    assert lesions.labels[470, 470] == lesions.labels[470, 230]  # merged across 40 µm gap
    assert lesions.labels.max() == 2


def test_froc_hand_built_cohort() -> None:
    pixel_um = 10.0
    shape = (200, 200)
    tumour = disk(shape, (100, 100), 30) | disk(shape, (20, 20), 1)  # Ø600 µm lesion + an ITC
    lesions = lesion_map(tumour, pixel_um)
    assert lesions.lesion_count == 1 and len(lesions.itc_labels) == 1
    tumour_slide = match_detections(
        [
            Detection(100, 100, 0.9),  # hit
            Detection(110, 100, 0.6),  # second hit on the same lesion: counted once, max kept
            Detection(20, 20, 0.95),  # on the ITC: neither TP nor FP
            Detection(180, 180, 0.8),  # false positive
        ],
        lesions,
    )
    normal_slide = match_detections([Detection(5, 5, 0.7), Detection(50, 50, 0.3)], None)
    assert tumour_slide.itc_hits == 1
    result = froc([tumour_slide, normal_slide])
    # Points: origin, t=0.9 (FP 0, sens 1), t=0.8 (0.5, 1), t=0.7 (1.0, 1), t=0.3 (1.5, 1).
    np.testing.assert_allclose(result.fp_per_slide, [0, 0, 0.5, 1.0, 1.5])
    np.testing.assert_allclose(result.sensitivity, [0, 1, 1, 1, 1])
    assert result.score == pytest.approx(1.0)


def test_froc_partial_sensitivity_interpolates() -> None:
    # Two lesions on one slide, one normal slide. Lesion 1 hit at 0.9, lesion 2 at 0.4;
    # FPs at 0.8 (tumour slide) and 0.5 (normal slide).
    slides = [
        _slide({1: 0.9, 2: 0.4}, [0.8]),
        _slide({}, [0.5]),
    ]
    result = froc(slides)
    # t=0.9: (0, .5); t=0.8: (.5, .5); t=0.5: (1, .5); t=0.4: (1, 1)
    np.testing.assert_allclose(result.fp_per_slide, [0, 0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(result.sensitivity, [0, 0.5, 0.5, 0.5, 1.0])
    # At 0.25 FP/slide: between (0, .5) and (.5, .5) → 0.5; at 1 FP/slide the last point wins (1.0);
    # beyond the curve's end it holds at 1.0.
    assert result.sensitivity_at == pytest.approx((0.5, 0.5, 1.0, 1.0, 1.0, 1.0))
    # The challenge's script never counts the cohort's lowest confidence when no lesion is missed
    # and none is an ITC: lesion 2 (0.4) is then never found.
    script = froc(slides, drop_lowest_threshold=True)
    assert script.sensitivity_at == pytest.approx((0.5,) * 6)


def test_script_mode_matches_reference_when_every_lesion_is_hit() -> None:
    pixel_um = 10.0
    shape = (100, 100)
    tumour = disk(shape, (30, 30), 20) | disk(shape, (75, 75), 15)
    cases = [(tumour, [(30, 30, 0.9), (75, 75, 0.4), (5, 95, 0.8)]), (None, [(50, 50, 0.5)])]
    slides = [
        match_detections(
            [Detection(x, y, c) for x, y, c in dets],
            lesion_map(t, pixel_um) if t is not None else None,
        )
        for t, dets in cases
    ]
    expected = reference_froc(cases, pixel_um)
    assert froc(slides, drop_lowest_threshold=True).sensitivity_at == pytest.approx(expected)
    assert froc(slides).sensitivity_at != pytest.approx(expected)


def test_froc_undefined_without_lesions() -> None:
    with pytest.raises(ValueError, match="no lesion"):
        froc([_slide({}, [0.5])])


def test_detections_from_regions_point_inside_ring() -> None:
    scores = np.zeros((50, 50))
    ring = disk((50, 50), (25, 25), 20) & ~disk((50, 50), (25, 25), 12)
    scores[ring] = 0.6
    scores[25, 44] = 0.9  # the ring's maximum, on the ring
    scores[2, 2] = 0.7
    mask = ring.copy()
    mask[2, 2] = True
    found = detections_from_regions(scores, mask)
    assert sorted(d.confidence for d in found) == [0.7, 0.9]
    top = max(found, key=lambda d: d.confidence)
    assert (top.x_px, top.y_px) == (44.5, 25.5)
    assert mask[int(top.y_px), int(top.x_px)]


# --- against an independent, loop-by-loop transcription of the challenge's rules ----------------


def _slide(lesion_confidence: dict[int, float | None], false_positives: list[float]):
    from engine.metrics.lesions import SlideDetections

    return SlideDetections(lesion_confidence, tuple(false_positives))


def reference_froc(cases, pixel_um: float, fp_rates=(0.25, 0.5, 1, 2, 4, 8)):
    """Independent reading of the evaluation: per-label TP list with zeros, sweep the sorted set of
    all probabilities from its second value, mean FPs over slides, np.interp on the reversed curve."""
    fp_lists, tp_lists, tumour_counts = [], [], []
    for tumour, detections in cases:
        if tumour is None or not tumour.any():
            fp_lists.append([c for (_, _, c) in detections])
            tp_lists.append([])
            tumour_counts.append(0)
            continue
        distance = ndimage.distance_transform_edt(~tumour)
        filled = ndimage.binary_fill_holes(distance < 75 / (pixel_um * 2))
        labels = measure.label(filled, connectivity=2)
        itc = [p.label for p in measure.regionprops(labels) if p.axis_major_length * pixel_um < 275]
        tp = np.zeros(labels.max(), np.float64)
        fps = []
        for x, y, c in detections:
            hit = labels[int(y), int(x)]
            if hit == 0:
                fps.append(c)
            elif hit not in itc and c > tp[hit - 1]:
                tp[hit - 1] = c
        fp_lists.append(fps)
        tp_lists.append(list(tp))
        tumour_counts.append(labels.max() - len(itc))
    all_fp = np.array([c for lst in fp_lists for c in lst])
    all_tp = np.array([c for lst in tp_lists for c in lst])
    probs = sorted(set(all_fp.tolist()) | set(all_tp.tolist()))
    total_fp, total_tp = [], []
    for threshold in probs[1:]:
        total_fp.append((all_fp >= threshold).sum())
        total_tp.append((all_tp >= threshold).sum())
    total_fp.append(0)
    total_tp.append(0)
    fps = np.asarray(total_fp) / len(cases)
    sens = np.asarray(total_tp) / sum(tumour_counts)
    return np.interp(fp_rates, fps[::-1], sens[::-1])


@st.composite
def cohorts(draw):
    pixel_um = 8.0
    shape = (64, 64)
    cases = []
    for _ in range(draw(st.integers(2, 4))):
        tumour = np.zeros(shape, bool)
        if draw(st.booleans()):
            for _ in range(draw(st.integers(1, 3))):
                cy, cx = draw(st.integers(8, 56)), draw(st.integers(8, 56))
                tumour |= disk(shape, (cy, cx), draw(st.floats(0.5, 12)))
        n = draw(st.integers(0, 6))
        detections = [
            (
                draw(st.floats(0, 63.99)),
                draw(st.floats(0, 63.99)),
                draw(st.sampled_from([0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 0.97])),
            )
            for _ in range(n)
        ]
        cases.append((tumour if tumour.any() else None, detections))
    return pixel_um, cases


@settings(max_examples=150, deadline=None)
@given(cohorts())
def test_froc_matches_independent_transcription(cohort) -> None:
    pixel_um, cases = cohort
    slides = []
    for tumour, detections in cases:
        lesions = lesion_map(tumour, pixel_um) if tumour is not None else None
        slides.append(match_detections([Detection(x, y, c) for x, y, c in detections], lesions))
    if sum(s.lesion_count for s in slides) == 0:
        with pytest.raises(ValueError, match="no lesion"):
            froc(slides)
        return
    ours = froc(slides, drop_lowest_threshold=True)
    np.testing.assert_allclose(ours.sensitivity_at, reference_froc(cases, pixel_um), atol=1e-12)
    # Counting every detection can only raise the curve.
    full = froc(slides)
    assert all(
        a >= b - 1e-12 for a, b in zip(full.sensitivity_at, ours.sensitivity_at, strict=True)
    )


# --- slide-level --------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000))
def test_slide_level_matches_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(6, 60))
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    scores = np.round(rng.random(n) + 0.3 * labels, 2)  # rounded: ties happen
    assert slide_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))

    grades_true = rng.integers(0, 6, n)
    grades_pred = np.clip(grades_true + rng.integers(-2, 3, n), 0, 5)
    cm = class_confusion(grades_true, grades_pred, 6)
    assert accuracy(cm) == pytest.approx(accuracy_score(grades_true, grades_pred))
    assert balanced_accuracy(cm) == pytest.approx(balanced_accuracy_score(grades_true, grades_pred))
    expected_kappa = cohen_kappa_score(
        grades_true, grades_pred, weights="quadratic", labels=list(range(6))
    )
    assert quadratic_weighted_kappa(cm) == pytest.approx(expected_kappa)


def test_auc_interval_is_seeded_and_shrinks_with_more_slides() -> None:
    rng = np.random.default_rng(0)

    def cohort(n: int):
        labels = rng.integers(0, 2, n)
        return labels, rng.normal(labels * 1.0, 1.0)

    small = cohort(40)
    first = slide_auc_interval(*small, seed=3)
    again = slide_auc_interval(*small, seed=3)
    assert first == again
    assert first.low is not None and first.high is not None
    assert first.low <= first.auc <= first.high
    big = slide_auc_interval(*cohort(1000), seed=3)
    assert big.high - big.low < (first.high - first.low) / 2
    assert 0.65 < big.auc < 0.85  # Φ(1/√2) ≈ 0.76 for unit shift, unit variance


def test_undefined_slide_metrics_are_none() -> None:
    assert slide_auc([1, 1, 1], [0.2, 0.3, 0.9]) is None
    assert slide_auc_interval([0, 0], [0.1, 0.2]).auc is None
    two = slide_auc_interval([0, 1], [0.1, 0.2], resamples=400)
    assert 100 < two.resamples < 300  # one-class resamples (about half) are skipped and counted
    assert quadratic_weighted_kappa(np.array([[3, 0], [0, 0]])) is None
    with pytest.raises(ValueError, match="0/1"):
        slide_auc([0, 2], [0.1, 0.2])


@settings(max_examples=60, deadline=None)
@given(cohorts())
def test_per_detection_outcomes_agree_with_the_matching(cohort) -> None:
    from engine.evaluate.lesion_rows import detection_outcomes

    pixel_um, cases = cohort
    for tumour, raw in cases:
        lesions = lesion_map(tumour, pixel_um) if tumour is not None else None
        detections = [Detection(x, y, c) for x, y, c in raw]
        matched = match_detections(detections, lesions)
        outcomes = [o["outcome"] for o in detection_outcomes(detections, lesions)]
        hit = [c for c in matched.lesion_confidence.values() if c is not None]
        assert outcomes.count("tp") == len(hit)
        assert outcomes.count("fp") == len(matched.false_positive_confidences)
        assert outcomes.count("itc") == matched.itc_hits
        tp_confidences = sorted(
            d.confidence for d, o in zip(detections, outcomes, strict=True) if o == "tp"
        )
        assert tp_confidences == sorted(hit)
