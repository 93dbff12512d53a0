"""engine.metrics checked against scikit-learn / scipy on random masks, plus undefined cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats
from sklearn import metrics as skm

from engine.metrics import (
    BURDEN_LABELS,
    BURDEN_STRATA,
    PANDA_KAROLINSKA_TO_TUMOUR,
    PANDA_RADBOUD_TO_TUMOUR,
    TIGER_7_TO_3,
    Counts,
    binary_metrics,
    burden_stratum,
    case_of,
    cohort_summary,
    confusion_counts,
    confusion_matrix,
    headline_split,
    macro_dice,
    merge_classes,
    miou,
    patch_auc,
    pearson,
    per_class_iou_dice,
    pixel_auc,
    slide_metrics,
)
from engine.metrics.binary import patch_scores

# sklearn warns about single-label inputs and zero divisions; we compare only where defined.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:sklearn")

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shapes = hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12)


@st.composite
def binary_maps(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pred, truth, valid, scores) of one shape; scores on a coarse grid so ties happen."""
    shape = draw(shapes)
    pred = draw(hnp.arrays(np.bool_, shape))
    truth = draw(hnp.arrays(np.bool_, shape))
    valid = draw(hnp.arrays(np.bool_, shape))
    levels = draw(st.integers(2, 6))
    scores = draw(hnp.arrays(np.int8, shape, elements=st.integers(0, levels))).astype(np.float32)
    return pred, truth, valid, scores / levels


def _close(ours: float | None, theirs: float) -> None:
    assert ours is not None
    assert ours == pytest.approx(theirs, abs=1e-12)


# --- binary -------------------------------------------------------------------------------


@PROPERTY
@given(binary_maps())
def test_binary_metrics_match_sklearn(maps: tuple[np.ndarray, ...]) -> None:
    pred, truth, valid, _ = maps
    counts = confusion_counts(pred, truth, valid)
    y_true, y_pred = truth[valid], pred[valid]
    assert counts.n == int(valid.sum())
    if y_true.size:
        tn, fp, fn, tp = skm.confusion_matrix(y_true, y_pred, labels=[False, True]).ravel()
        assert (counts.tp, counts.fp, counts.fn, counts.tn) == (tp, fp, fn, tn)

    got = binary_metrics(counts)
    any_true, any_pred = bool(y_true.any()), bool(y_pred.any())
    kw = {"zero_division": 0.0}  # only compared where defined
    if any_true or any_pred:
        _close(got["iou"], skm.jaccard_score(y_true, y_pred, **kw))
        _close(got["dice"], skm.f1_score(y_true, y_pred, **kw))
    else:
        assert got["iou"] is None
        assert got["dice"] is None
    if any_pred:
        _close(got["precision"], skm.precision_score(y_true, y_pred, **kw))
    else:
        assert got["precision"] is None
    if any_true:
        _close(got["recall"], skm.recall_score(y_true, y_pred, **kw))
    else:
        assert got["recall"] is None
    if (~y_true).any():
        _close(got["specificity"], skm.recall_score(~y_true, ~y_pred, **kw))
    else:
        assert got["specificity"] is None


def test_undefined_cases_are_none_not_one() -> None:
    empty = np.zeros((4, 4), bool)
    counts = confusion_counts(empty, empty)
    assert case_of(counts) == "both_empty"
    assert binary_metrics(counts) == {
        "iou": None,
        "dice": None,
        "precision": None,
        "recall": None,
        "specificity": 1.0,
    }
    some = empty.copy()
    some[0, 0] = True
    other = empty.copy()
    other[3, 3] = True
    assert case_of(confusion_counts(some, empty)) == "fp_only"
    assert binary_metrics(confusion_counts(some, empty))["iou"] == 0.0
    assert binary_metrics(confusion_counts(some, empty))["recall"] is None
    assert case_of(confusion_counts(empty, some)) == "fn_only"
    assert binary_metrics(confusion_counts(empty, some))["precision"] is None
    assert case_of(confusion_counts(some, other)) == "disjoint"
    assert case_of(confusion_counts(some, some | other)) == "overlap"


def test_counts_add_and_sum() -> None:
    a, b = Counts(1, 2, 3, 4), Counts(10, 20, 30, 40)
    assert a + b == Counts(11, 22, 33, 44)
    assert sum([a, b]) == a + b
    with pytest.raises(ValueError, match="non-negative"):
        Counts(-1, 0, 0, 0)


def test_float_masks_are_refused() -> None:
    with pytest.raises(TypeError, match="bool or integer"):
        confusion_counts(np.zeros((2, 2)), np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="one shape"):
        confusion_counts(np.zeros((2, 2), bool), np.zeros((2, 3), bool))


@PROPERTY
@given(binary_maps())
def test_pearson_matches_scipy(maps: tuple[np.ndarray, ...]) -> None:
    _, truth, valid, scores = maps
    scores = scores.copy()
    scores[0, 0] = np.nan  # not finite: left out
    keep = valid & np.isfinite(scores)
    s, t = scores[keep].astype(np.float64), truth[keep].astype(np.float64)
    got = pearson(scores, truth, valid)
    if s.size < 2 or np.ptp(s) == 0 or np.ptp(t) == 0:
        assert got is None
    else:
        assert got == pytest.approx(stats.pearsonr(s, t).statistic, abs=1e-9)


@PROPERTY
@given(binary_maps())
def test_pixel_auc_matches_sklearn_with_ties(maps: tuple[np.ndarray, ...]) -> None:
    _, truth, valid, scores = maps
    s, t = scores[valid], truth[valid]
    got = pixel_auc(scores, truth, valid)
    if t.all() or not t.any():
        assert got is None
    else:
        assert got == pytest.approx(skm.roc_auc_score(t, s), abs=1e-12)


def test_pixel_auc_on_a_large_continuous_map() -> None:
    rng = np.random.default_rng(1)
    truth = rng.random((300, 300)) < 0.1
    scores = (rng.normal(size=truth.shape) + truth).astype(np.float32)
    assert pixel_auc(scores, truth) == pytest.approx(
        skm.roc_auc_score(truth.ravel(), scores.ravel()), abs=1e-12
    )


@PROPERTY
@given(
    binary_maps(),
    st.integers(1, 5),
    st.sampled_from([None, 0.25, 0.5, 1.0]),
)
def test_patch_auc_matches_per_patch_reference(
    maps: tuple[np.ndarray, ...], patch_px: int, fraction: float | None
) -> None:
    _, truth, valid, scores = maps
    pixel_um = 8.0
    ref_scores, ref_labels = [], []
    h, w = truth.shape
    for r in range(0, h, patch_px):
        for c in range(0, w, patch_px):
            v = valid[r : r + patch_px, c : c + patch_px]
            if not v.any():
                continue
            s = scores[r : r + patch_px, c : c + patch_px][v]
            t = truth[r : r + patch_px, c : c + patch_px][v]
            ref_scores.append(s.max())
            ref_labels.append(t.any() if fraction is None else t.mean() >= fraction)
    kw = {"patch_um": patch_px * pixel_um, "pixel_um": pixel_um, "positive_fraction": fraction}
    score, label = patch_scores(scores, truth, valid, **kw)
    np.testing.assert_array_equal(score, ref_scores)
    np.testing.assert_array_equal(label, ref_labels)
    got = patch_auc(scores, truth, valid, **kw)
    if len(set(ref_labels)) < 2:
        assert got is None
    else:
        assert got == pytest.approx(skm.roc_auc_score(ref_labels, ref_scores), abs=1e-12)


def test_patch_size_is_in_micrometres() -> None:
    truth = np.zeros((8, 8), bool)
    truth[0, 0] = True
    scores = np.zeros((8, 8), np.float32)
    scores[1, 1] = 1.0  # same 4 px (32 µm at 8 µm/px) patch as the tumour pixel
    assert patch_auc(scores, truth, patch_um=32.0, pixel_um=8.0) == 1.0
    assert patch_auc(scores, truth, patch_um=8.0, pixel_um=8.0) == pytest.approx(
        skm.roc_auc_score(truth.ravel(), scores.ravel())
    )
    with pytest.raises(ValueError, match="smaller than one"):
        patch_auc(scores, truth, patch_um=2.0, pixel_um=8.0)


# --- multi-class --------------------------------------------------------------------------


@PROPERTY
@given(st.data())
def test_multiclass_matches_sklearn(data: st.DataObject) -> None:
    shape = data.draw(shapes)
    n = data.draw(st.integers(1, 5))
    labels = st.integers(0, n - 1)
    pred = data.draw(hnp.arrays(np.uint8, shape, elements=labels))
    truth = data.draw(hnp.arrays(np.uint8, shape, elements=labels))
    valid = data.draw(hnp.arrays(np.bool_, shape))
    cm = confusion_matrix(pred, truth, valid, n_classes=n)
    y_true, y_pred = truth[valid], pred[valid]
    iou, dice = per_class_iou_dice(cm)
    if not y_true.size:
        assert not cm.any()
        assert iou == dice == [None] * n
        assert miou(cm) is None
        return
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y_true, y_pred, labels=list(range(n))))
    kw = {"labels": list(range(n)), "average": None, "zero_division": 0.0}
    sk_iou = skm.jaccard_score(y_true, y_pred, **kw)
    sk_dice = skm.f1_score(y_true, y_pred, **kw)
    for k in range(n):
        present = bool((y_true == k).any() or (y_pred == k).any())
        if present:
            _close(iou[k], sk_iou[k])
            _close(dice[k], sk_dice[k])
        else:
            assert iou[k] is None
            assert dice[k] is None
    defined = [k for k in range(n) if iou[k] is not None]
    if defined:
        assert miou(cm) == pytest.approx(np.mean(sk_iou[defined]))
        assert macro_dice(cm) == pytest.approx(np.mean(sk_dice[defined]))
    else:
        assert miou(cm) is None
        assert macro_dice(cm) is None


def test_miou_ignores_absent_classes_and_can_skip_background() -> None:
    truth = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1]])
    cm = confusion_matrix(pred, truth, n_classes=3)  # class 2 nowhere
    iou, _ = per_class_iou_dice(cm)
    assert iou == [0.5, pytest.approx(2 / 3), None]
    assert miou(cm) == pytest.approx((0.5 + 2 / 3) / 2)
    assert miou(cm, classes=[1, 2]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(pred, truth + 5, n_classes=3)


def test_merge_maps() -> None:
    tiger = np.arange(8, dtype=np.uint8).reshape(2, 4)
    np.testing.assert_array_equal(merge_classes(tiger, TIGER_7_TO_3), [[0, 1, 2, 3], [3, 3, 2, 3]])
    assert TIGER_7_TO_3.n_classes == 4
    assert TIGER_7_TO_3.class_names[2] == "stroma"
    radboud = np.arange(6, dtype=np.uint8)
    np.testing.assert_array_equal(
        merge_classes(radboud, PANDA_RADBOUD_TO_TUMOUR), [0, 0, 0, 1, 1, 1]
    )
    karolinska = np.array([0, 1, 2, 2])
    np.testing.assert_array_equal(
        merge_classes(karolinska, PANDA_KAROLINSKA_TO_TUMOUR), [0, 0, 1, 1]
    )
    assert merge_classes(karolinska, PANDA_KAROLINSKA_TO_TUMOUR).dtype == np.uint8
    with pytest.raises(ValueError, match=r"\[9\] are not in the merge map"):
        merge_classes(np.array([1, 9]), PANDA_KAROLINSKA_TO_TUMOUR)
    np.testing.assert_array_equal(merge_classes(np.array([1, 9]), {1: 5}, default=0), [5, 0])
    np.testing.assert_array_equal(merge_classes(np.array([1, 2]), {1: 300, 2: 7}), [300, 7])


# --- per slide and cohort -----------------------------------------------------------------


def test_burden_strata_boundaries() -> None:
    assert burden_stratum(0.05) == "high"
    assert burden_stratum(0.02) == "low"
    assert burden_stratum(0.004) == "low"
    assert burden_stratum(0.0039) == "very_low"
    assert burden_stratum(1e-9) == "very_low"
    assert burden_stratum(0.0) == "none"
    assert burden_stratum(None) == "none"
    assert burden_stratum(float("nan")) == "none"
    with pytest.raises(ValueError, match="within 0..1"):
        burden_stratum(1.5)


def test_slide_metrics_row() -> None:
    tissue = np.zeros((20, 20), bool)
    tissue[:, :10] = True
    truth = np.zeros_like(tissue)
    truth[2:4, 2:4] = True  # 4 px of 200 tissue px = 2 % -> small
    truth[2:4, 15:17] = True  # off tissue: ignored
    scores = np.where(truth, 0.9, 0.1).astype(np.float32)
    row = slide_metrics(scores > 0.5, scores, truth, tissue, pixel_um=8.0, patch_um=32.0)
    assert row["tp"] == 4
    assert row["fp"] == 0
    assert row["tn"] == 196
    assert row["case"] == "overlap"
    assert row["iou"] == 1.0
    assert row["pixel_auc"] == 1.0
    assert row["patch_auc"] == 1.0
    assert row["pearson"] == pytest.approx(1.0)
    assert row["truth_pct_of_tissue"] == pytest.approx(2.0)
    assert row["burden_stratum"] == "low"

    empty = slide_metrics(
        scores > 2, scores, np.zeros_like(truth), tissue, pixel_um=8.0, patch_um=32.0
    )
    assert empty["case"] == "both_empty"
    assert empty["iou"] is None
    assert empty["pixel_auc"] is None
    assert empty["burden_stratum"] == "none"


def _row(split: str, tp: int, fp: int, fn: int, tn: int, stratum: str, **extra: object) -> dict:
    counts = Counts(tp, fp, fn, tn)
    return {
        "split": split,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "case": case_of(counts),
        "burden_stratum": stratum,
        **binary_metrics(counts),
        **extra,
    }


def test_cohort_summary_micro_macro_median_strata() -> None:
    rows = [
        _row("calibration", 8, 2, 0, 90, "high", pixel_auc=0.9),
        _row("test", 1, 1, 2, 96, "low", pixel_auc=float("nan")),
        _row("test", 0, 0, 0, 100, "none"),
        _row("test", 0, 3, 0, 97, "none"),
    ]
    table = cohort_summary(rows)
    get = {(r["scope"], r["statistic"]): r for r in table}

    everything = get[("all", "micro_iou")]
    assert everything["value"] == pytest.approx(9 / (9 + 6 + 2))
    assert everything["n_slides"] == 4
    # IoU per slide: 0.8, 0.25, None (both_empty), 0.0 -> macro over the three defined ones.
    macro = get[("all", "macro_iou")]
    assert macro["value"] == pytest.approx((0.8 + 0.25 + 0.0) / 3)
    assert macro["n_undefined"] == 1
    assert get[("all", "median_iou")]["value"] == pytest.approx(0.25)
    assert get[("all", "n_case_both_empty")]["value"] == 1
    assert get[("all", "n_case_fp_only")]["value"] == 1
    assert get[("all", "macro_pixel_auc")]["value"] == pytest.approx(0.9)
    assert get[("all", "macro_pixel_auc")]["n_undefined"] == 3

    assert get[("split=test", "micro_iou")]["value"] == pytest.approx(1 / 7)
    assert get[("split=test", "n_slides")]["value"] == 3
    assert get[("burden=none", "micro_iou")]["value"] == 0.0
    assert get[("split=test, burden=none", "macro_iou")]["value"] == 0.0
    assert get[("split=test, burden=none", "macro_iou")]["n_undefined"] == 1
    assert ("split=calibration, burden=none", "macro_iou") not in get  # empty scope
    scopes = {r["scope"] for r in table}
    assert {"all", "split=calibration", "split=test"} <= scopes
    assert {r["burden"] for r in table} <= {"all", *BURDEN_STRATA}

    # All slides both_empty: macro and micro IoU undefined, never 1.0.
    table = cohort_summary([_row("test", 0, 0, 0, 10, "none")] * 2)
    get = {(r["scope"], r["statistic"]): r["value"] for r in table}
    assert get[("all", "micro_iou")] is None
    assert get[("all", "macro_iou")] is None


def test_cohort_rows_count_slides_without_ground_truth() -> None:
    rows = [
        _row("calibration", 8, 2, 0, 90, "high"),
        _row("test", 1, 1, 2, 96, "low"),
        {"split": "test", "has_ground_truth": False},
        {"split": "test", "has_ground_truth": False},
        {"split": "train", "has_ground_truth": False},
    ]
    table = cohort_summary(rows)
    get = {(r["scope"], r["statistic"]): r for r in table}
    # Slides without truth are covered by their scope but enter no figure.
    assert get[("all", "n_slides")]["n_slides"] == 5
    assert get[("all", "n_slides")]["n_slides_without_truth"] == 3
    assert get[("all", "micro_iou")]["value"] == pytest.approx(9 / (9 + 3 + 2))
    assert get[("split=test", "macro_iou")]["n_slides"] == 3
    assert get[("split=test", "macro_iou")]["n_slides_without_truth"] == 2
    assert get[("split=test", "macro_iou")]["value"] == pytest.approx(0.25)
    assert get[("split=test", "macro_iou")]["n_undefined"] == 0
    # A split of slides without truth only: covered, counted, no figure.
    assert get[("split=train", "n_slides")]["n_slides_without_truth"] == 1
    assert get[("split=train", "macro_iou")]["value"] is None
    # Burden strata come from the truth: a burden scope has no slide without it.
    assert all(r["n_slides_without_truth"] == 0 for r in table if r["burden"] != "all")
    assert {r["n_slides"] for r in table if r["scope"] == "split=test, burden=low"} == {1}
    # Rows that do not say are taken to have truth, as before.
    plain = cohort_summary([_row("test", 1, 1, 2, 96, "low")])
    assert {r["n_slides_without_truth"] for r in plain} == {0}


def test_burden_strata_have_labels_and_headline_split_prefers_test() -> None:
    assert set(BURDEN_LABELS) == set(BURDEN_STRATA)
    assert all(key.isidentifier() and key.islower() for key in BURDEN_STRATA)
    assert "2 %" in BURDEN_LABELS["high"] and "0.4" in BURDEN_LABELS["very_low"]
    assert headline_split([{"split": "all"}, {"split": "train"}, {"split": "test"}]) == "test"
    assert headline_split([{"split": "all"}, {"split": "calibration"}]) == "all"


def test_cohort_summary_derives_stratum_from_pixels() -> None:
    row = _row("test", 5, 0, 0, 95, "none")
    del row["burden_stratum"]
    row |= {"truth_px": 5, "tissue_px": 100}
    scopes = {r["scope"] for r in cohort_summary([row])}
    assert "burden=high" in scopes
    with pytest.raises(ValueError, match="tp, fp, fn and tn"):
        cohort_summary([{"burden_stratum": "none"}])
