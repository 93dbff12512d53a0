"""Post end to end: Darkness score maps of the synthetic cohort → Parquet tables, with Dask."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import zarr

from engine.models import ModelRegistry
from engine.post.cohort import PostReport, post, post_is_current, stale_slides
from engine.post.compute import SweepCounts, fit_threshold
from engine.post.params import PostExecution, PostParams
from engine.store import read_completion
from engine.store.frame import Frame, resample_nearest
from engine.tables import read_table
from tests import post_fixtures
from tests.post_fixtures import add_two_class_predictions

post_fleet = post_fixtures.post_fleet
fleet_copy = post_fixtures.fleet_copy

SLIDES = ["synth_000", "synth_001", "synth_002", "synth_003"]
SYNC = PostParams(execution=PostExecution(scheduler="sync"))
COHORT = "*"  # slide_id of cohort-level failures and staleness


@pytest.fixture(scope="module")
def report(post_fleet: Path) -> PostReport:
    """One post run with the default parameters and scheduler."""
    return post(post_fleet, "darkness", progress=False)


def _row(report: PostReport, slide_id: str) -> dict:
    (row,) = [r for r in report.slides.to_pylist() if r["slide_id"] == slide_id]
    return row


def assert_same_rows(got: pa.Table, want: pa.Table) -> None:
    """Equal tables but for provenance; floats to 1e-12 (BLAS sums in another order on workers)."""
    keep = [c for c in want.column_names if c not in ("run_id", "written_at")]
    assert got.column_names == want.column_names
    for column in keep:
        a, b = got[column].to_pylist(), want[column].to_pylist()
        if pa.types.is_floating(want.schema.field(column).type):
            assert [x is None for x in a] == [x is None for x in b], column
            np.testing.assert_allclose(
                [x for x in a if x is not None],
                [x for x in b if x is not None],
                rtol=1e-12,
                err_msg=column,
            )
        else:
            assert a == b, column


def _splits(root: Path) -> dict[str, str]:
    return {
        s: read_completion(root / "slides" / f"{s}.ome.zarr")["result"]["split"] for s in SLIDES
    }


# --- the run -------------------------------------------------------------------------------


def test_every_slide_has_a_row_with_provenance(report: PostReport, post_fleet: Path) -> None:
    assert not report.failures
    assert not report.reused
    assert sorted(report.slides["slide_id"].to_pylist()) == SLIDES
    model_id = ModelRegistry(post_fleet).resolve("darkness").model_id
    for name in ("slides", "regions", "thresholds", "cohort"):
        table = report.tables[name]
        assert table.num_rows > 0, name
        for column, value in (
            ("model_id", model_id),
            ("params_hash", report.params_hash),
            ("run_id", report.run_id),
        ):
            assert set(table[column].to_pylist()) == {value}, (name, column)
        assert pc.all(pc.is_valid(table["engine_version"])).as_py()
    assert set(report.slides["threshold"].to_pylist()) == {report.threshold}
    row = _row(report, "synth_000")
    assert row["tumour_px"] > 0
    assert row["n_regions"] >= 1
    assert 0 < row["tumour_pct_of_tissue"] < 100
    assert row["largest_region_mm2"] <= row["tumour_mm2"] + 1e-9
    assert row["pixel_um"] == pytest.approx(8.0)
    assert row["iou"] > 0.5
    assert row["pixel_auc"] > 0.8
    assert row["case"] == "overlap"


def test_threshold_is_fitted_on_the_calibration_split_only(
    report: PostReport, post_fleet: Path
) -> None:
    splits = _splits(post_fleet)
    calibration = sorted(s for s, split in splits.items() if split == "calibration")
    assert report.calibration_slide_ids == calibration
    thresholds = report.thresholds.to_pylist()
    assert {r["fitted_on"] for r in thresholds} == {"calibration"}
    assert {r["n_slides_fitted"] for r in thresholds} == {len(calibration)}
    (chosen,) = [r for r in thresholds if r["chosen_for"] and "iou" in r["chosen_for"].split(",")]
    assert chosen["threshold"] == report.threshold

    # By hand with the pure functions: in this cohort the 8 µm tissue label (level 1) and the
    # 8 µm annotation level (2) share the score map's pixel centres, so cropping aligns them.
    model_id = report.model.model_id
    grid = np.round(np.linspace(0.0, 1.0, 101), 10)
    total = SweepCounts.empty(grid)
    for slide_id in calibration:
        scores = np.asarray(
            zarr.open_array(post_fleet / "predictions" / model_id / f"{slide_id}.zarr" / "0")[0]
        )
        labels = post_fleet / "slides" / f"{slide_id}.ome.zarr" / "labels"
        tissue, truth = (np.zeros(scores.shape, bool) for _ in range(2))
        t = np.asarray(zarr.open_array(labels / "tissue" / "1")[:]) > 0
        a = np.asarray(zarr.open_array(labels / "annotation" / "2")[:]) > 0
        tissue[: t.shape[0], : t.shape[1]] = t
        truth[: a.shape[0], : a.shape[1]] = a
        total = total + SweepCounts.from_slide(scores, truth, tissue, grid)
    assert fit_threshold(total, "iou") == report.threshold
    assert [r["tp"] for r in thresholds] == total.tp.tolist()
    assert [r["fp"] for r in thresholds] == total.fp.tolist()


def test_test_split_scores_do_not_move_the_threshold(report: PostReport, fleet_copy: Path) -> None:
    splits = _splits(fleet_copy)
    test_slide = next(s for s, split in splits.items() if split == "test")
    store = fleet_copy / "predictions" / report.model.model_id / f"{test_slide}.zarr"
    array = zarr.open_array(store / "0", mode="r+")
    scores = np.asarray(array[:])
    array[:] = np.where(np.isfinite(scores), np.random.default_rng(0).random(scores.shape), np.nan)
    record = json.loads((store / "slidefleet-complete.json").read_text())
    record["input_key"]["tampered"] = True  # as a re-inference would change it
    (store / "slidefleet-complete.json").write_text(json.dumps(record))

    assert stale_slides(fleet_copy, "darkness", SYNC) == {
        COHORT: "no complete post run for this model and these parameters"
    }
    post(fleet_copy, "darkness", params=SYNC, progress=False)
    assert post_is_current(fleet_copy, "darkness", SYNC)
    record["input_key"]["tampered"] = "again"
    (store / "slidefleet-complete.json").write_text(json.dumps(record))
    assert set(stale_slides(fleet_copy, "darkness", SYNC)) == {test_slide}
    again = post(fleet_copy, "darkness", params=SYNC, progress=False)
    assert not again.reused
    assert again.threshold == report.threshold
    assert again.thresholds.select(["threshold", "tp", "fp", "fn", "tn"]).equals(
        report.thresholds.select(["threshold", "tp", "fp", "fn", "tn"])
    )
    assert _row(again, test_slide)["pixel_auc"] != _row(report, test_slide)["pixel_auc"]


# --- tables ---------------------------------------------------------------------------------


def test_tables_read_back_with_pandas_polars_and_duckdb(
    report: PostReport, post_fleet: Path
) -> None:
    import duckdb
    import polars as pl

    tables = post_fleet / "tables"
    model_id = report.model.model_id
    for name in ("slides", "regions", "thresholds", "cohort"):
        assert (tables / name / f"model_id={model_id}").is_dir(), name
        want = report.tables[name].num_rows
        # The partition key lives in the directory name only, so pandas' defaults (hive
        # discovery) read every table directory as it is, with model_id exactly once.
        frame = pd.read_parquet(tables / name)
        assert len(frame) == want
        assert set(frame["model_id"].astype(str)) == {model_id}
        assert list(frame.columns).count("model_id") == 1
        for part in (tables / name).rglob("*.parquet"):
            assert "model_id" not in pq.read_schema(part).names, part
        lazy = pl.scan_parquet(tables / name / "**" / "*.parquet", hive_partitioning=True)
        assert lazy.select(pl.len()).collect().item() == want
        got = duckdb.sql(
            f"SELECT count(*), count(DISTINCT model_id) FROM read_parquet('{tables / name}/*/*.parquet', "
            "hive_partitioning = true)"
        ).fetchall()
        assert got == [(want, 1)]
    # Every table of the run, failures included: plain pandas equals the engine's own reader.
    table_dirs = [d for d in sorted(tables.iterdir()) if d.is_dir() and not d.name.startswith("_")]
    assert {"slides", "regions", "thresholds", "cohort"} <= {d.name for d in table_dirs}
    for directory in table_dirs:
        engine_table = read_table(tables, directory.name)
        frame = pd.read_parquet(directory)
        assert sorted(frame.columns) == sorted(engine_table.column_names), directory.name
        assert len(frame) == engine_table.num_rows, directory.name
    slides = pl.read_parquet(tables / "slides" / "**" / "*.parquet", hive_partitioning=True)
    assert slides.filter(pl.col("slide_id") == "synth_001")["iou"].to_list() in ([None], [0.0])


def test_largest_region_centroid_lies_in_the_annotated_tumour(
    report: PostReport, post_fleet: Path
) -> None:
    regions = [r for r in report.regions.to_pylist() if r["slide_id"] == "synth_000"]
    largest = max(regions, key=lambda r: r["area_um2"])
    assert largest["area_um2"] == pytest.approx(
        _row(report, "synth_000")["largest_region_mm2"] * 1e6
    )
    # Annotation level 0: 2 µm pixels, pixel 0 centred at 0.75 µm; level-0 px k is centred at k * 0.5 µm.
    annotation = zarr.open_array(
        post_fleet / "slides" / "synth_000.ome.zarr" / "labels" / "annotation" / "0"
    )
    x_um = (largest["centroid_x_level0_px"] - 0.5) * 0.5
    y_um = (largest["centroid_y_level0_px"] - 0.5) * 0.5
    assert annotation[round((y_um - 0.75) / 2.0), round((x_um - 0.75) / 2.0)] == 1
    assert (
        largest["bbox_x0_level0_px"]
        < largest["centroid_x_level0_px"]
        < largest["bbox_x1_level0_px"]
    )
    assert largest["mean_score"] <= largest["max_score"]


def test_cohort_has_burden_strata_and_split_scopes(report: PostReport) -> None:
    cohort = report.cohort.to_pylist()
    assert {"high", "low", "very_low", "none"} <= {r["burden"] for r in cohort}
    assert {"calibration", "test", "train"} <= {r["split"] for r in cohort}
    stats = {(r["scope"], r["statistic"]): r for r in cohort}
    assert stats[("all", "n_slides")]["value"] == 4
    assert {"micro_iou", "macro_iou", "median_iou"} <= {s for _, s in stats}
    assert stats[("split=calibration", "n_slides")]["value"] == 1


def test_cohort_rows_count_a_slide_without_ground_truth(
    report: PostReport, fleet_copy: Path
) -> None:
    splits = _splits(fleet_copy)
    test_slide = next(s for s, split in splits.items() if split == "test")
    labels = fleet_copy / "slides" / f"{test_slide}.ome.zarr" / "labels"
    attrs = json.loads((labels / "zarr.json").read_text())
    attrs["attributes"]["ome"]["labels"].remove("annotation")
    (labels / "zarr.json").write_text(json.dumps(attrs))
    shutil.rmtree(labels / "annotation")

    result = post(fleet_copy, "darkness", params=SYNC, progress=False)
    assert not result.failures
    assert _row(result, test_slide)["has_ground_truth"] is False
    stats = {(r["scope"], r["statistic"]): r for r in result.cohort.to_pylist()}
    n_test = sum(split == "test" for split in splits.values())
    headline = stats[("split=test", "macro_iou")]
    assert (headline["n_slides"], headline["n_slides_without_truth"]) == (n_test, 1)
    assert stats[("all", "n_slides")]["n_slides_without_truth"] == 1
    assert stats[("all", "n_slides")]["value"] == len(splits)
    assert stats[("split=calibration", "micro_iou")]["n_slides_without_truth"] == 0
    # The slide enters no figure: the others' pooled counts are the whole cohort's.
    others = [r for r in report.slides.to_pylist() if r["slide_id"] != test_slide]
    tp, fp, fn = (sum(r[k] for r in others) for k in ("tp", "fp", "fn"))
    assert stats[("all", "micro_iou")]["value"] == pytest.approx(tp / (tp + fp + fn))
    assert all(r["n_slides_without_truth"] == 0 for r in stats.values() if r["burden"] != "all")
    frame = pd.read_parquet(fleet_copy / "tables" / "cohort")
    assert int(frame["n_slides_without_truth"].max()) == 1


def test_cli_summary_headlines_the_test_split_as_the_report_does(
    report: PostReport, post_fleet: Path
) -> None:
    from engine.cli import cohort_headline_lines

    cohort = report.cohort.to_pylist()
    n_test = sum(split == "test" for split in _splits(post_fleet).values())
    lines = cohort_headline_lines(cohort, {report.model.model_id: "darkness"})
    assert lines[0] == f"  cohort darkness: test split, {n_test} slide{'s' * (n_test != 1)}"
    test_iou = next(
        r for r in cohort if r["scope"] == "split=test" and r["statistic"] == "macro_iou"
    )
    printed = next(line for line in lines if line.split()[1] == "macro_iou")
    value = "-" if test_iou["value"] is None else f"{test_iou['value']:.3f}"
    assert printed.split()[2] == value
    # Without a test split the headline is every slide, said so.
    no_test = [r for r in cohort if r["split"] in ("all", "calibration", "train")]
    first = cohort_headline_lines(no_test)[0]
    assert f"all slides (no test split), {len(_splits(post_fleet))} slides" in first


def test_normal_slide_has_null_undefined_metrics(report: PostReport) -> None:
    row = _row(report, "synth_001")
    assert row["burden_stratum"] == "none"
    assert row["truth_px"] == 0
    assert row["case"] in ("both_empty", "fp_only")
    assert row["recall"] is None
    assert row["pixel_auc"] is None
    assert row["pearson"] is None
    assert row["patch_auc"] is None
    assert row["oracle_threshold"] is None
    if row["case"] == "both_empty":
        assert row["iou"] is None
        assert row["dice"] is None
        assert row["precision"] is None


def test_missing_or_broken_predictions_are_failure_rows_and_the_rest_complete(
    report: PostReport, fleet_copy: Path
) -> None:
    model_id = report.model.model_id
    predictions = fleet_copy / "predictions" / model_id
    (predictions / "synth_000.zarr" / "slidefleet-complete.json").unlink()
    shutil.rmtree(predictions / "synth_001.zarr")
    metadata = json.loads((predictions / "synth_003.zarr" / "zarr.json").read_text())
    del metadata["attributes"]["ome"]  # the task itself raises on this one
    (predictions / "synth_003.zarr" / "zarr.json").write_text(json.dumps(metadata))

    result = post(fleet_copy, "darkness", params=SYNC, progress=False)
    assert result.slides["slide_id"].to_pylist() == ["synth_002"]
    assert {(f.slide_id, f.stage, f.error_type) for f in result.failures} == {
        ("synth_000", "post", "PredictionMissing"),
        ("synth_001", "post", "PredictionMissing"),
        ("synth_003", "post", "PredictionInvalid"),
    }
    on_disk = read_table(fleet_copy / "tables", "failures").to_pylist()
    assert {(r["slide_id"], r["run_id"]) for r in on_disk} == {
        ("synth_000", result.run_id),
        ("synth_001", result.run_id),
        ("synth_003", result.run_id),
    }


def test_rerun_is_idempotent_and_reads_tables_back(report: PostReport, post_fleet: Path) -> None:
    def parts() -> list[Path]:
        return sorted((post_fleet / "tables").rglob("*.parquet"))

    before = parts()
    again = post(post_fleet, "darkness", params=SYNC, progress=False)
    assert again.reused
    assert again.run_id == report.run_id
    assert parts() == before
    for name in ("slides", "regions", "thresholds", "cohort"):
        assert again.tables[name].equals(report.tables[name]), name
    assert post_is_current(post_fleet, "darkness", SYNC)

    forced = post(post_fleet, "darkness", params=SYNC, progress=False, force=True)
    assert not forced.reused
    assert forced.run_id != report.run_id
    slides = read_table(post_fleet / "tables", "slides")
    mine = slides.filter(pc.equal(slides["params_hash"], report.params_hash))
    assert set(mine["run_id"].to_pylist()) == {forced.run_id}, (
        "a newer run replaces the older parts"
    )
    assert_same_rows(forced.slides, report.slides)


def test_every_tissue_pixel_is_scored_and_unscored_tissue_is_counted_not_negative(
    report: PostReport, fleet_copy: Path
) -> None:
    from engine.post.slide_task import SlidePlan, load_slide_maps

    assert report.slides["unscored_tissue_px"].to_pylist() == [0] * report.slides.num_rows
    before = _row(report, "synth_002")
    prediction = fleet_copy / "predictions" / report.model.model_id / "synth_002.zarr"
    plan = SlidePlan(
        "synth_002",
        str(fleet_copy / "slides" / "synth_002.ome.zarr"),
        str(prediction),
        None,
        None,
        0,
        1,
        False,
    )
    tissue = load_slide_maps(plan).tissue
    rows, cols = np.nonzero(tissue)
    r, c = int(rows[rows.size // 2]), int(cols[cols.size // 2])
    array = zarr.open_array(prediction / "0", mode="r+")
    block = np.asarray(array[:, r - 2 : r + 3, c - 2 : c + 3])
    block[:] = np.nan
    array[:, r - 2 : r + 3, c - 2 : c + 3] = block
    lost = int(tissue[r - 2 : r + 3, c - 2 : c + 3].sum())
    assert lost > 0

    after = _row(post(fleet_copy, "darkness", params=SYNC, progress=False, force=True), "synth_002")
    assert after["unscored_tissue_px"] == lost
    assert after["tissue_px"] == before["tissue_px"] - lost
    # Not counted as negatives: the pixels counted by the confusion matrix shrink by as many.
    counted = ("tp", "fp", "fn", "tn")
    assert sum(after[k] for k in counted) == sum(before[k] for k in counted) - lost


# --- options --------------------------------------------------------------------------------


def test_no_calibration_tumour_leaves_thresholds_empty_and_says_why(fleet_copy: Path) -> None:
    params = PostParams(calibration_split="validation", execution=PostExecution(scheduler="sync"))
    result = post(fleet_copy, "darkness", params=params, progress=False)
    assert result.threshold is None
    assert result.thresholds.num_rows == 0
    assert result.slides.num_rows == 0
    (failure,) = result.failures
    assert (failure.slide_id, failure.error_type) == ("*", "ThresholdFitError")
    assert "validation" in failure.message
    assert "fallback_threshold" in failure.message

    fixed = post(
        fleet_copy,
        "darkness",
        progress=False,
        params=params.model_copy(update={"fallback_threshold": 0.55}),
    )
    assert fixed.thresholds.num_rows == 0
    assert fixed.slides.num_rows == 4
    assert set(fixed.slides["threshold"].to_pylist()) == {0.55}
    assert set(fixed.slides["threshold_objective"].to_pylist()) == {"fixed"}


def test_zscore_thresholds_on_the_zscore_grid(fleet_copy: Path) -> None:
    params = PostParams(score="zscore", objective="f1", execution=PostExecution(scheduler="sync"))
    result = post(fleet_copy, "darkness", params=params, progress=False)
    assert not result.failures
    assert set(result.thresholds["score_kind"].to_pylist()) == {"zscore"}
    assert result.thresholds.num_rows == 241
    assert -4.0 <= result.threshold <= 8.0
    assert result.threshold_objective == "f1"
    assert result.threshold == result.fitted_thresholds["f1"]
    assert set(result.slides["score_kind"].to_pylist()) == {"zscore"}


def test_multiclass_model_gets_confusion_matrices(post_fleet: Path, fleet_copy: Path) -> None:
    darkness = ModelRegistry(fleet_copy).resolve("darkness")
    model = add_two_class_predictions(fleet_copy, darkness)
    result = post(fleet_copy, model.ref, params=SYNC, progress=False)
    assert not result.failures
    assert result.slides.num_rows == 4
    row = _row(result, "synth_000")
    cm = np.asarray(row["confusion_matrix"])
    assert cm.shape == (2, 2)
    assert cm.sum() > 0
    assert cm[1, 1] > 0
    assert len(row["class_iou"]) == 2
    assert row["miou"] is not None
    stats = {(r["scope"], r["statistic"]) for r in result.cohort.to_pylist()}
    assert {("all", "micro_miou"), ("all", "confusion[truth=tumour,pred=tumour]")} <= stats


@pytest.mark.parametrize("scheduler", ["processes", "ray"])
def test_schedulers_give_the_same_rows(
    report: PostReport, post_fleet: Path, scheduler: str
) -> None:
    params = PostParams(execution=PostExecution(scheduler=scheduler, n_workers=1))
    other = post(post_fleet, "darkness", params=params, progress=False, force=True)
    assert ("LocalCluster" if scheduler == "processes" else "Ray") in other.scheduler
    assert_same_rows(other.slides, report.slides)
    assert_same_rows(other.regions, report.regions)


# --- resampling -------------------------------------------------------------------------------


def test_labels_are_sampled_at_prediction_pixel_centres() -> None:
    # A 2 µm label (pixel 0 centred at 0.75 µm) onto an 8 µm grid (pixel 0 centred at 3.75 µm):
    # output pixel i samples label pixel round((3.75 + 8 i - 0.75) / 2) = 4 i + 2 (rounding up).
    label = np.arange(40 * 48, dtype=np.int32).reshape(40, 48)
    array = zarr.create_array(store={}, shape=label.shape, chunks=(16, 16), dtype="int32")
    array[:] = label
    out = resample_nearest(
        array, Frame(2.0, 2.0, 0.75, 0.75, 40, 48), Frame(8.0, 8.0, 3.75, 3.75, 12, 13)
    )
    assert out.shape == (12, 13)
    np.testing.assert_array_equal(out[:10, :12], label[2::4, 2::4][:10, :12])
    assert (out[10:] == 0).all()
    assert (out[:, 12:] == 0).all()
    # A coarser label is repeated (nearest), never interpolated.
    up = resample_nearest(
        array, Frame(2.0, 2.0, 0.75, 0.75, 40, 48), Frame(1.0, 1.0, 0.25, 0.25, 4, 4)
    )
    np.testing.assert_array_equal(up, label[[0, 0, 1, 1]][:, [0, 0, 1, 1]])


@pytest.mark.parametrize(
    ("scale", "offset"), [(8.0, 3.75), (3.0, 1.0), (1.5, -2.0), (0.7, 5.3), (2.0, 0.75)]
)
def test_resampling_matches_brute_force_nearest(scale: float, offset: float) -> None:
    rng = np.random.default_rng(int(scale * 10))
    label = rng.integers(0, 255, size=(37, 53)).astype(np.uint8)
    array = zarr.create_array(store={}, shape=label.shape, chunks=(8, 8), dtype="uint8")
    array[:] = label
    source = Frame(2.0, 2.0, 0.75, 0.75, 37, 53)
    target = Frame(scale, scale, offset, offset, 41, 29)
    want = np.zeros((41, 29), np.uint8)
    for i in range(41):
        for j in range(29):
            r = int(np.floor((offset + i * scale - 0.75) / 2.0 + 0.5))
            c = int(np.floor((offset + j * scale - 0.75) / 2.0 + 0.5))
            if 0 <= r < 37 and 0 <= c < 53:
                want[i, j] = label[r, c]
    np.testing.assert_array_equal(resample_nearest(array, source, target), want)


def test_auto_scheduler_uses_ray_when_it_is_up_else_sizes_the_cohort(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from engine.post.dask_cluster import LOCAL_CLUSTER_MIN_SLIDES, resolve_scheduler

    auto = PostExecution()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setitem(sys.modules, "ray", SimpleNamespace(is_initialized=lambda: False))
    assert resolve_scheduler(auto, LOCAL_CLUSTER_MIN_SLIDES - 1) == "sync"
    assert resolve_scheduler(auto, LOCAL_CLUSTER_MIN_SLIDES) == "processes"
    assert resolve_scheduler(PostExecution(scheduler="threads"), 1000) == "threads"
    monkeypatch.setitem(sys.modules, "ray", SimpleNamespace(is_initialized=lambda: True))
    assert resolve_scheduler(auto, 4) == "ray"
