"""engine.post.compute: z-score, threshold sweeps, morphology, regions, quantities.

Morphology and regions are checked against scikit-image on random masks; sweeps against a
brute-force loop over thresholds.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats
from skimage import measure, morphology

from engine.metrics import confusion_counts
from engine.post.compute import (
    SweepCounts,
    ThresholdFitError,
    apply_threshold,
    clean_mask,
    default_grid,
    fit_threshold,
    label_regions,
    objective_curve,
    oracle_columns,
    oracle_threshold,
    quantify,
    region_polygons,
    regions,
    sweep_table,
    zscore_over_tissue,
)

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

masks = hnp.arrays(np.bool_, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=16))


# --- normalisation ------------------------------------------------------------------------


def test_zscore_over_tissue_only() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((30, 30)).astype(np.float32)
    tissue = np.zeros((30, 30), bool)
    tissue[5:25, 5:25] = True
    scores[~tissue] = 50.0  # glass must not move the statistics
    scores[6, 6] = np.nan
    z = zscore_over_tissue(scores, tissue)
    on = tissue & np.isfinite(scores)
    assert z.dtype == np.float32
    assert np.isnan(z[~tissue]).all()
    assert np.isnan(z[6, 6])
    np.testing.assert_allclose(z[on], stats.zscore(scores[on].astype(np.float64)), atol=1e-5)


def test_zscore_constant_and_empty_tissue() -> None:
    scores = np.full((4, 4), 0.3, np.float32)
    tissue = np.eye(4, dtype=bool)
    z = zscore_over_tissue(scores, tissue)
    assert (z[tissue] == 0).all()
    assert np.isnan(z[~tissue]).all()
    assert np.isnan(zscore_over_tissue(scores, np.zeros((4, 4), bool))).all()


# --- thresholds ---------------------------------------------------------------------------


@st.composite
def scored_slides(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    shape = draw(hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12))
    # Scores on a 0.05 grid (ties with thresholds), plus NaN and out-of-range values.
    values = st.sampled_from([*(k / 20 for k in range(21)), float("nan"), -0.5, 1.5])
    scores = draw(hnp.arrays(np.float32, shape, elements=values))
    truth = draw(hnp.arrays(np.bool_, shape))
    valid = draw(hnp.arrays(np.bool_, shape))
    return scores, truth, valid


@PROPERTY
@given(scored_slides())
def test_sweep_counts_equal_thresholding_each_grid_point(
    slide: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    scores, truth, valid = slide
    grid = default_grid("probability")
    sweep = SweepCounts.from_slide(scores, truth, valid, grid)
    for i, t in enumerate(grid):
        assert sweep.at(i) == confusion_counts(apply_threshold(scores, t), truth, valid)


@PROPERTY
@given(st.lists(scored_slides(), min_size=1, max_size=4))
def test_sweep_counts_of_slides_add_up_to_the_concatenation(
    slides: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> None:
    grid = default_grid("zscore")
    total = sum(SweepCounts.from_slide(s, t, v, grid) for s, t, v in slides)
    cat = [np.concatenate([part[k].ravel() for part in slides]) for k in range(3)]
    assert total == SweepCounts.from_slide(*cat, grid)
    assert total == sum(
        (SweepCounts.from_slide(s, t, v, grid) for s, t, v in slides), SweepCounts.empty(grid)
    )


def test_sweep_counts_is_vectorised_and_grids_must_match() -> None:
    source = inspect.getsource(SweepCounts.from_slide)
    assert "for " not in source
    a = SweepCounts.empty(default_grid("probability"))
    with pytest.raises(ValueError, match="different threshold grids"):
        _ = a + SweepCounts.empty(default_grid("zscore"))
    with pytest.raises(ValueError, match="strictly increasing"):
        SweepCounts.empty([0.5, 0.2])


def test_default_grids() -> None:
    p = default_grid("probability")
    assert (p[0], p[-1], p.size) == (0.0, 1.0, 101)
    assert p[37] == 0.37
    z = default_grid("zscore")
    assert (z[0], z[-1]) == (-4.0, 8.0)
    assert np.allclose(np.diff(z), 0.05)


def _constructed() -> tuple[np.ndarray, np.ndarray]:
    # Tumour scores 0.62, 0.70, 0.90; other tissue 0.10, 0.30, 0.55, 0.65.
    scores = np.array([0.62, 0.70, 0.90, 0.10, 0.30, 0.55, 0.65], np.float32)
    truth = np.array([1, 1, 1, 0, 0, 0, 0], bool)
    return scores, truth


def test_fit_threshold_picks_the_grid_point_maximising_the_objective() -> None:
    scores, truth = _constructed()
    grid = default_grid("probability")
    counts = SweepCounts.from_slide(scores, truth, None, grid)
    # IoU is 3/4 for thresholds in (0.55, 0.62]: grid points 0.56 .. 0.62; middle one is 0.59.
    assert fit_threshold(counts, "iou") == pytest.approx(0.59)
    assert fit_threshold(counts, "f1") == pytest.approx(0.59)
    assert fit_threshold(counts, "youden") == pytest.approx(0.59)
    iou = objective_curve(counts, "iou")
    assert np.nanmax(iou) == pytest.approx(0.75)
    assert iou[59] == np.nanmax(iou)

    # F1 and Youden disagree with IoU when false positives are cheap for Youden.
    scores = np.array([0.9, 0.8, 0.4, 0.35, 0.3, 0.2, 0.1, 0.05], np.float32)
    truth = np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)
    negatives = np.linspace(0.0, 0.39, 200, dtype=np.float32)
    scores = np.concatenate([scores, negatives])
    truth = np.concatenate([truth, np.zeros(200, bool)])
    counts = SweepCounts.from_slide(scores, truth, None, grid)
    for objective in ("iou", "f1", "youden"):
        curve = objective_curve(counts, objective)
        chosen = fit_threshold(counts, objective)
        assert curve[np.flatnonzero(np.isclose(grid, chosen))[0]] == np.nanmax(curve)


@PROPERTY
@given(scored_slides(), st.sampled_from(["iou", "f1", "youden"]))
def test_fit_threshold_matches_brute_force(
    slide: tuple[np.ndarray, np.ndarray, np.ndarray], objective: str
) -> None:
    scores, truth, valid = slide
    grid = default_grid("probability")
    counts = SweepCounts.from_slide(scores, truth, valid, grid)
    values = []
    for t in grid:
        c = confusion_counts(apply_threshold(scores, t), truth, valid)
        tpr = c.tp / c.n_truth if c.n_truth else math.nan
        tnr = c.tn / (c.tn + c.fp) if c.tn + c.fp else math.nan
        denom = {"iou": c.tp + c.fp + c.fn, "f1": 2 * c.tp + c.fp + c.fn}.get(objective)
        if objective == "youden":
            values.append(tpr + tnr - 1)
        else:
            num = c.tp if objective == "iou" else 2 * c.tp
            values.append(num / denom if denom else math.nan)
    values_arr = np.array(values)
    n_truth = int((truth & valid).sum())
    trivial = (
        n_truth == 0
        or (objective == "youden" and n_truth == int(valid.sum()))
        or np.all(np.isnan(values_arr))
        or np.nanmax(values_arr) <= 0
    )
    if trivial:
        with pytest.raises(ThresholdFitError):
            fit_threshold(counts, objective)  # type: ignore[arg-type]
        assert oracle_threshold(scores, truth, valid, grid, objective) == (None, None)  # type: ignore[arg-type]
        return
    chosen = fit_threshold(counts, objective)  # type: ignore[arg-type]
    assert values_arr[list(grid).index(chosen)] == pytest.approx(np.nanmax(values_arr))
    t, v = oracle_threshold(scores, truth, valid, grid, objective)  # type: ignore[arg-type]
    assert (t, v) == (chosen, pytest.approx(np.nanmax(values_arr)))


def test_sweep_table_and_oracle_columns() -> None:
    scores, truth = _constructed()
    grid = default_grid("probability")
    table = sweep_table(SweepCounts.from_slide(scores, truth, None, grid))
    assert len(table) == 101
    assert set(table[0]) == {
        "threshold",
        "tp",
        "fp",
        "fn",
        "tn",
        "iou",
        "f1",
        "youden",
        "precision",
        "recall",
    }
    assert table[0]["tp"] == 3
    assert table[0]["fp"] == 4
    assert table[-1]["precision"] is None  # nothing scores >= 1.0: undefined, not 1.0
    assert table[-1]["iou"] == 0.0
    assert table[59]["iou"] == pytest.approx(0.75)
    cols = oracle_columns(scores, truth, None, grid, ("iou", "youden"))
    assert cols == {
        "oracle_iou_threshold": pytest.approx(0.59),
        "oracle_iou": pytest.approx(0.75),
        "oracle_youden_threshold": pytest.approx(0.59),
        "oracle_youden": pytest.approx(0.75),
    }
    negative = oracle_columns(scores, np.zeros_like(truth), None, grid)
    assert negative == {"oracle_iou_threshold": None, "oracle_iou": None}


def test_fit_threshold_refuses_a_calibration_without_tumour() -> None:
    grid = default_grid("probability")
    counts = SweepCounts.from_slide(
        np.random.default_rng(0).random(50), np.zeros(50, bool), None, grid
    )
    with pytest.raises(ThresholdFitError, match="0 tumour"):
        fit_threshold(counts, "iou")
    assert isinstance(ThresholdFitError("x"), ValueError)


# --- morphology ---------------------------------------------------------------------------


def _skimage_remove_small(mask: np.ndarray, min_px: int) -> np.ndarray:
    """skimage reference, keeping regions of >= min_px pixels (8-connected)."""
    params = inspect.signature(morphology.remove_small_objects).parameters
    if "max_size" in params:  # scikit-image >= 0.26: removes <= max_size
        return morphology.remove_small_objects(mask, max_size=min_px - 1, connectivity=2)
    return morphology.remove_small_objects(mask, min_size=min_px, connectivity=2)


def _skimage_fill_holes(mask: np.ndarray, max_px: int) -> np.ndarray:
    """skimage reference filling enclosed 4-connected holes of <= max_px pixels.

    skimage also fills small background touching the border, so pad the map with a wide
    background margin that is always larger than max_px.
    """
    pad = 8
    padded = np.pad(mask, pad)
    params = inspect.signature(morphology.remove_small_holes).parameters
    if "max_size" in params:
        out = morphology.remove_small_holes(padded, max_size=max_px, connectivity=1)
    else:
        out = morphology.remove_small_holes(padded, area_threshold=max_px + 1, connectivity=1)
    return out[pad:-pad, pad:-pad]


@PROPERTY
@given(masks, st.integers(1, 12), st.integers(0, 12), st.sampled_from([0.5, 2.0, 8.0]))
def test_clean_mask_matches_skimage(
    mask: np.ndarray, min_px: int, hole_px: int, pixel_um: float
) -> None:
    area = pixel_um * pixel_um
    out = clean_mask(mask, pixel_um, min_region_um2=min_px * area, max_hole_um2=hole_px * area)
    expected = _skimage_remove_small(mask, min_px)
    if hole_px and expected.any():
        expected = _skimage_fill_holes(expected, hole_px)
    np.testing.assert_array_equal(out, expected)


def test_clean_mask_sizes_in_um2() -> None:
    mask = np.zeros((20, 20), bool)
    mask[1:3, 1:3] = True  # 4 px
    mask[10:15, 10:15] = True  # 25 px with a 1-px hole
    mask[12, 12] = False
    # At 8 µm/px a pixel is 64 µm²: keep >= 5 px regions, fill holes <= 1 px.
    out = clean_mask(mask, 8.0, min_region_um2=5 * 64.0, max_hole_um2=64.0)
    assert not out[1:3, 1:3].any()
    assert out[10:15, 10:15].all()
    # 448 µm² is 7 px at 8 µm/px but 28 px at 4 µm/px: there the 25-px region is too small.
    assert clean_mask(mask, 8.0, min_region_um2=448.0)[10:15, 10:15].any()
    assert not clean_mask(mask, 4.0, min_region_um2=448.0).any()
    # math.inf fills every enclosed hole, never the background reaching the edge.
    ring = np.ones((9, 9), bool)
    ring[2:7, 2:7] = False
    ring[0, 4] = False
    filled = clean_mask(ring, 8.0, max_hole_um2=math.inf)
    assert filled[2:7, 2:7].all()
    assert not filled[0, 4]


# --- regions ------------------------------------------------------------------------------


@PROPERTY
@given(masks, st.sampled_from([1.0, 8.0]))
def test_regions_match_skimage_regionprops(mask: np.ndarray, pixel_um: float) -> None:
    rng = np.random.default_rng(mask.size)
    scores = rng.random(mask.shape)
    labels, n = label_regions(mask)
    sk_labels = measure.label(mask, connectivity=2)
    assert n == sk_labels.max()
    got = regions(mask, scores, pixel_um, level0_px_per_pixel_x=1.0, level0_px_per_pixel_y=1.0)
    props = measure.regionprops(labels, intensity_image=scores)
    assert [r.region_id for r in got] == [p.label for p in props]
    for r, p in zip(got, props, strict=True):
        assert np.array_equal(
            labels == r.region_id, sk_labels == sk_labels[p.coords[0][0], p.coords[0][1]]
        )
        assert r.area_px == p.area
        assert r.area_um2 == pytest.approx(p.area * pixel_um**2)
        # level0 = grid here: pixel centres at +0.5.
        assert r.centroid_y_level0_px == pytest.approx(p.centroid[0] + 0.5)
        assert r.centroid_x_level0_px == pytest.approx(p.centroid[1] + 0.5)
        assert (
            r.bbox_y0_level0_px,
            r.bbox_x0_level0_px,
            r.bbox_y1_level0_px,
            r.bbox_x1_level0_px,
        ) == p.bbox
        assert r.mean_score == pytest.approx(p.intensity_mean)
        assert r.max_score == pytest.approx(p.intensity_max)


def test_a_region_spanning_two_chunks_is_one_region() -> None:
    mask = np.zeros((64, 128), bool)
    mask[20:30, 40:90] = True  # crosses the chunk border at x = 64
    mask[40, 63] = mask[41, 64] = True  # touches diagonally across the border: one region
    found = regions(mask, None, 8.0, mpp=0.25)
    assert len(found) == 2
    assert found[0].area_px == 500
    assert found[1].area_px == 2
    assert found[0].mean_score is None
    per_chunk = label_regions(mask[:, :64])[1] + label_regions(mask[:, 64:])[1]
    assert per_chunk == 4  # what labelling chunk by chunk would wrongly give


def test_area_scales_with_pixel_um_squared() -> None:
    mask = np.zeros((10, 10), bool)
    mask[2:5, 2:6] = True
    a = regions(mask, None, 2.0, mpp=0.5)[0]
    b = regions(mask, None, 8.0, mpp=0.5)[0]
    assert a.area_px == b.area_px == 12
    assert a.area_um2 == 12 * 4.0
    assert b.area_um2 == pytest.approx(a.area_um2 * 16)


def test_centroid_and_bbox_map_to_level0() -> None:
    mask = np.zeros((6, 8), bool)
    mask[2, 3] = True
    scores = np.full(mask.shape, np.nan, np.float32)
    scores[2, 3] = 0.25
    kw = {"origin_x_level0_px": 1000.0, "origin_y_level0_px": 2000.0}
    r = regions(mask, scores, 8.0, level0_px_per_pixel_x=32.0, level0_px_per_pixel_y=30.0, **kw)[0]
    assert (r.centroid_x_level0_px, r.centroid_y_level0_px) == (1000 + 3.5 * 32, 2000 + 2.5 * 30)
    assert (r.bbox_x0_level0_px, r.bbox_x1_level0_px) == (1000 + 3 * 32, 1000 + 4 * 32)
    assert (r.bbox_y0_level0_px, r.bbox_y1_level0_px) == (2000 + 2 * 30, 2000 + 3 * 30)
    assert (r.mean_score, r.max_score) == (0.25, 0.25)
    # pixel_um / mpp gives the same per-pixel size: 8 µm grid on a 0.25 µm/px slide = 32 px.
    s = regions(mask, scores, 8.0, mpp=0.25, **kw)[0]
    assert s.centroid_x_level0_px == 1000 + 3.5 * 32
    assert s.centroid_y_level0_px == 2000 + 2.5 * 32
    with pytest.raises(ValueError, match="mpp"):
        regions(mask, scores, 8.0)


def test_region_polygons_in_level0() -> None:
    mask = np.zeros((12, 12), bool)
    mask[2:6, 3:7] = True  # 4 x 4 square
    mask[8, 8] = mask[9, 9] = True  # diagonal pair: one region, one ring
    kw = {"pixel_um": 8.0, "mpp": 0.25, "origin_x_level0_px": 100.0, "origin_y_level0_px": 50.0}
    polygons = region_polygons(mask, **kw)
    found = regions(mask, None, **kw)
    assert sorted(polygons) == [r.region_id for r in found] == [1, 2]
    square = polygons[1]
    assert square.is_valid
    r = found[0]
    # Marching squares runs through pixel-edge midpoints: corners are cut by 1/8 px each.
    assert square.bounds == (
        r.bbox_x0_level0_px,
        r.bbox_y0_level0_px,
        r.bbox_x1_level0_px,
        r.bbox_y1_level0_px,
    )
    assert square.area == pytest.approx((16 - 0.5) * 32 * 32)
    assert square.exterior.is_ccw
    assert polygons[2].is_valid
    # Two half-pixel diamonds joined through the corner cell by another half pixel.
    assert polygons[2].area == pytest.approx(1.5 * 32 * 32)
    labels, _ = label_regions(mask)
    assert region_polygons(mask, labels=labels, **kw)[1].equals(square)
    assert region_polygons(mask.astype(np.uint8), **kw)[2].equals(polygons[2])
    assert regions(mask, None, labels=labels, **kw) == found
    simple = region_polygons(mask, tolerance_level0_px=20.0, **kw)[1]
    assert len(simple.exterior.coords) < len(square.exterior.coords)


# --- quantification -----------------------------------------------------------------------


def test_quantify() -> None:
    tissue = np.zeros((100, 100), bool)
    tissue[:, :50] = True  # 5000 px
    pred = np.zeros_like(tissue)
    pred[10:20, 10:20] = True  # 100 px
    pred[50:55, 10:14] = True  # 20 px
    pred[0:5, 90:95] = True  # off tissue: not tumour
    found = regions(pred, None, 8.0, mpp=0.25)
    q = quantify(pred, tissue, 8.0, found)
    assert q.tumour_px == 120
    assert q.tissue_px == 5000
    assert q.tumour_pct_of_tissue == pytest.approx(2.4)
    assert q.tumour_mm2 == pytest.approx(120 * 64 / 1e6)
    assert q.n_regions == 3
    assert q.largest_region_mm2 == pytest.approx(100 * 64 / 1e6)

    none = quantify(np.zeros_like(pred), np.zeros_like(tissue), 8.0, [])
    assert none.tumour_pct_of_tissue is None
    assert none.largest_region_mm2 is None
    assert (none.tumour_px, none.n_regions, none.tumour_mm2) == (0, 0, 0.0)


def test_pure_compute_imports_no_cluster_libraries() -> None:
    import engine.metrics
    import engine.post.compute

    for package in (engine.metrics, engine.post.compute):
        for path in Path(package.__file__).parent.rglob("*.py"):
            text = path.read_text()
            for name in ("ray", "dask", "zarr"):
                assert f"import {name}" not in text, f"{path} imports {name}"
                assert f"from {name}" not in text, f"{path} imports {name}"
