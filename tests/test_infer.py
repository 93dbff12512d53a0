"""Inference end to end on ingested synthetic slides, with real Ray actors and TorchScript models."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest
import ray
import zarr

from engine.infer import FusionConfig, InferParams, infer
from engine.infer.prediction_store import UNITS_LOG
from engine.ingest import ingest
from engine.slides import open_slide
from engine.store import read_completion
from tests.infer_models import Darkness, NanOnDarkTiles, WrongShape, darkness_card, register

SMALL_UNITS = InferParams(unit_tiles=2)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, synth_cohort: Path, ray_session) -> Path:
    root = tmp_path_factory.mktemp("infer") / "root"
    report = ingest(synth_cohort, root, progress=False)
    assert not report.failures
    register(root, Darkness(), darkness_card("darkness"))
    return root


def _prediction(root: Path, model_id: str, slide_id: str) -> np.ndarray:
    return np.asarray(
        zarr.open_group(root / "predictions" / model_id / f"{slide_id}.zarr", mode="r")["0"][:]
    )


def test_one_actor_per_logical_gpu_each_bound_to_its_own_device(fleet: Path) -> None:
    report = infer(fleet, "darkness", progress=False, params=InferParams(unit_tiles=4))
    gpu_ids = [tuple(a["gpu_ids"]) for a in report.actors]
    assert len(gpu_ids) == 2 and len(set(gpu_ids)) == 2 and all(len(g) == 1 for g in gpu_ids)
    assert {a["cuda_visible_devices"] for a in report.actors} == {g[0] for g in gpu_ids}
    assert sum(a["tiles"] for a in report.actors) == report.tiles > 0
    assert all(a["units"] > 0 for a in report.actors), "both GPUs should get work"


def test_fractional_gpus_pack_two_actors_per_gpu(fleet: Path) -> None:
    # 2 CPUs in the test cluster: four actors need half a CPU each to fit. tta changes the output key.
    params = InferParams(gpus_per_actor=0.5, cpus_per_actor=0.5, tta="flips")
    report = infer(fleet, "darkness", progress=False, params=params)
    per_gpu = Counter(a["gpu_ids"][0] for a in report.actors)
    assert sorted(per_gpu.values()) == [2, 2]


def test_cpu_actors_when_gpus_are_not_used(fleet: Path) -> None:
    params = InferParams(device="cpu", tta="dihedral")
    report = infer(fleet, "darkness", progress=False, params=params)
    assert report.actors and all(a["gpu_ids"] == [] and a["device"] == "cpu" for a in report.actors)


def test_cpu_actors_beside_a_stream_take_ingests_cpus_once_it_has_handed_over_its_last_slide(
    fleet: Path,
) -> None:
    from engine.infer.driver import CpuShare
    from engine.infer.feed import SlideFeed

    stores = sorted((fleet / "slides").glob("synth_*.ome.zarr"))[:2]
    feed = SlideFeed(maxsize=2)
    feed.put(stores[0])

    def on_slide(slide_id: str, outcome: str) -> None:
        if slide_id == stores[0].name.removesuffix(
            ".ome.zarr"
        ):  # "ingest" hands over its last slide
            feed.put(stores[1])
            feed.close()

    register(
        fleet, Darkness(), darkness_card("darkness-threads")
    )  # a model of its own: nothing scored yet
    params = InferParams(device="cpu", unit_tiles=1)
    report = infer(
        fleet,
        "darkness-threads",
        progress=False,
        params=params,
        feed=feed,
        on_slide=on_slide,
        cpu_share=CpuShare(max_actors=1, cpus_per_actor=1.0, threads_after_ingest=2),
    )
    assert len(report.scored) == 2 and not report.failures
    assert report.cpu_threads_after_ingest == 2
    assert [a["cpu_threads"] for a in report.actors] == [
        2
    ]  # was 1 (OMP_NUM_THREADS) while ingest ran


def test_device_auto_without_enough_gpus_or_an_autoscaler_is_cpu_and_says_why(fleet: Path) -> None:
    # 2 logical GPUs, actors needing 4 each, no autoscaler: CPUs, and the reason is recorded.
    params = InferParams(gpus_per_actor=4, tta="flips", max_actors=1)
    report = infer(fleet, "darkness", progress=False, params=params)
    assert report.device["device"] == "cpu" and report.device["requested"] == "auto"
    assert "no autoscaler" in report.device["reason"]
    assert report.actors and all(a["gpu_ids"] == [] for a in report.actors)


def test_device_gpu_never_falls_back_and_times_out_naming_what_is_missing(fleet: Path) -> None:
    from engine.errors import PlacementTimeout

    # mpp_tolerance differs from the test above only so that this prediction is not already complete.
    params = InferParams(
        device="gpu", gpus_per_actor=4, actor_start_timeout_s=2, tta="flips", mpp_tolerance=0.031
    )
    with pytest.raises(
        PlacementTimeout, match=r"0 of 1 scoring actors placed .* needs 1 CPU \+ 4 GPU"
    ):
        infer(fleet, "darkness", progress=False, params=params, slide_ids=["synth_000"])


def test_score_map_is_aligned_with_the_slide(fleet: Path, synth_cohort: Path) -> None:
    report = infer(fleet, "darkness", progress=False)
    model_id = report.model.model_id
    slide_id = "synth_000"
    store = zarr.open_group(fleet / "predictions" / model_id / f"{slide_id}.zarr", mode="r")
    dataset = store.attrs["ome"]["multiscales"][0]["datasets"][0]
    scale = dataset["coordinateTransformations"][0]["scale"]
    assert scale[1:] == pytest.approx([8.0, 8.0])  # model 2 µm/px x stride 4
    scores = np.asarray(store["0"][0])
    with open_slide(synth_cohort.parent / "slides" / f"{slide_id}.tif") as slide:
        level0 = slide.read_region_rgb(0, 0, 0, slide.info.width_px, slide.info.height_px)
    # Expected: darkness averaged over each output pixel's 16 x 16 level-0 footprint.
    h, w = (s // 16 for s in level0.shape[:2])
    darkness = 1 - level0[: h * 16, : w * 16].reshape(h, 16, w, 16, 3).mean(axis=(1, 3, 4)) / 255
    scored = np.isfinite(scores[:h, :w])
    assert scored.mean() > 0.2
    got, want = scores[:h, :w][scored], darkness[scored]
    assert np.abs(got - want).mean() < 0.03
    assert np.corrcoef(got, want)[0, 1] > 0.97
    shifted = darkness[:, 1:][scored[:, :-1]]
    assert (
        np.corrcoef(scores[:h, : w - 1][scored[:, :-1]], shifted)[0, 1]
        < np.corrcoef(got, want)[0, 1]
    )


def test_rerun_skips_complete_slides(fleet: Path) -> None:
    infer(fleet, "darkness", progress=False)
    again = infer(fleet, "darkness", progress=False)
    assert sorted(again.skipped) == ["synth_000", "synth_001", "synth_002", "synth_003"]
    assert again.tiles == 0


def test_killed_actor_mid_slide_gives_the_identical_map(fleet: Path) -> None:
    model = register(fleet, Darkness(), darkness_card("darkness-kill"))
    reference = infer(fleet, model.ref, progress=False, params=SMALL_UNITS)
    expected = {
        s["slide_id"]: _prediction(fleet, model.model_id, s["slide_id"]) for s in reference.scored
    }
    shutil.rmtree(fleet / "predictions" / model.model_id)

    killed: list[int] = []

    def kill_once(stats, actors) -> None:
        if not killed and stats.slide_id == "synth_000":
            ray.kill(
                actors[0], no_restart=False
            )  # Ray restarts it; its in-flight units are retried
            killed.append(stats.actor_pid)

    report = infer(fleet, model.ref, progress=False, params=SMALL_UNITS, on_unit_done=kill_once)
    assert killed and not report.failures
    assert report.tiles == reference.tiles  # nothing lost; retries rewrite their own chunk only
    pids = {a["pid"] for a in report.actors}
    assert killed[0] not in pids or len(pids) == 2
    for slide_id, want in expected.items():
        np.testing.assert_array_equal(_prediction(fleet, model.model_id, slide_id), want)


def test_killed_run_resumes_with_identical_output(fleet: Path, tmp_path: Path) -> None:
    model = register(fleet, Darkness(), darkness_card("darkness-resume"))
    script = textwrap.dedent(f"""
        import os, signal
        from engine.infer import InferParams, infer
        done = []
        def crash(stats, actors):
            done.append(stats)
            if len(done) == 5:
                os.kill(os.getpid(), signal.SIGKILL)
        infer({str(fleet)!r}, {model.ref!r}, progress=False,
              params=InferParams(unit_tiles=2, max_actors=1, in_flight_per_actor=1), on_unit_done=crash)
    """)
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    with contextlib.suppress(ProcessLookupError):
        import os

        os.killpg(process.pid, signal.SIGKILL)  # the run's own local Ray, if anything is left
    partials = list((fleet / "predictions" / model.model_id).glob(".*.partial-*"))
    logged = sum(len((p / UNITS_LOG).read_text().splitlines()) for p in partials)
    finished = [
        p for p in (fleet / "predictions" / model.model_id).glob("*.zarr") if read_completion(p)
    ]
    assert logged + 4 * len(finished) >= 5 - 1 and partials, "the kill should land mid-slide"

    resumed = infer(fleet, model.ref, progress=False, params=SMALL_UNITS)
    resumed_tiles = resumed.tiles
    shutil.copytree(fleet / "predictions" / model.model_id, tmp_path / "resumed")
    shutil.rmtree(fleet / "predictions" / model.model_id)
    clean = infer(fleet, model.ref, progress=False, params=SMALL_UNITS)
    assert 0 < resumed_tiles < clean.tiles, "units finished before the kill are not redone"
    for slide in clean.scored:
        got = np.asarray(
            zarr.open_group(tmp_path / "resumed" / f"{slide['slide_id']}.zarr", mode="r")["0"][:]
        )
        np.testing.assert_array_equal(got, _prediction(fleet, model.model_id, slide["slide_id"]))


def test_nan_output_fails_only_that_slide(fleet: Path) -> None:
    # Tumour is darker than stroma: tiles over tumour (macro/small/micro slides) emit NaN.
    model = register(
        fleet, NanOnDarkTiles(0.62), darkness_card("nan-on-tumour"), check_output=False
    )
    report = infer(fleet, model.ref, progress=False)
    failed = {f.slide_id: f for f in report.failures}
    assert failed and all(f.error_type == "ModelOutputInvalid" for f in failed.values())
    assert "NaN" in next(iter(failed.values())).message
    assert {s["slide_id"] for s in report.scored} == {
        "synth_000",
        "synth_001",
        "synth_002",
        "synth_003",
    } - set(failed)
    assert report.scored, "slides without NaN tiles still complete"
    for slide_id in failed:
        assert not (fleet / "predictions" / model.model_id / f"{slide_id}.zarr").exists()
        assert not list(
            (fleet / "predictions" / model.model_id).glob(f".{slide_id}.zarr.partial-*")
        )
    table = pads.dataset(
        fleet / "tables" / "failures", format="parquet", partitioning="hive"
    ).to_table()
    rows = [r for r in table.to_pylist() if r["run_id"] == report.run_id]
    assert {r["slide_id"] for r in rows} == set(failed) and {r["stage"] for r in rows} == {"infer"}


def test_wrong_output_shape_is_a_clear_failure(fleet: Path) -> None:
    model = register(fleet, WrongShape(), darkness_card("wrong-shape"), check_output=False)
    report = infer(fleet, model.ref, progress=False)
    assert len(report.failures) == 4 and not report.scored
    assert all("shape" in f.message for f in report.failures)


def test_fusion_with_all_weight_on_the_model_mpp_equals_plain_inference(fleet: Path) -> None:
    model = register(fleet, Darkness(), darkness_card("darkness-fusion"))
    plain = infer(fleet, model.ref, progress=False, slide_ids=["synth_002"])
    want = _prediction(fleet, model.model_id, "synth_002")
    infer(
        fleet,
        model.ref,
        progress=False,
        slide_ids=["synth_002"],
        params=InferParams(fusion=FusionConfig(weights=(1.0, 0.0))),
    )
    np.testing.assert_array_equal(_prediction(fleet, model.model_id, "synth_002"), want)
    infer(
        fleet,
        model.ref,
        progress=False,
        slide_ids=["synth_002"],
        params=InferParams(fusion=FusionConfig(weights=(0.6, 0.4))),
    )
    fused = _prediction(fleet, model.model_id, "synth_002")
    assert plain.scored and np.isfinite(fused).sum() == np.isfinite(want).sum()
    assert not np.array_equal(fused, want)
    assert np.nanmean(np.abs(fused - want)) < 0.1  # darkness barely changes with magnification


def test_prediction_store_opens_in_ngff_readers(fleet: Path) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    report = infer(fleet, "darkness", progress=False)
    store = fleet / "predictions" / report.model.model_id / "synth_001.zarr"
    attrs = json.loads((store / "zarr.json").read_text())["attributes"]
    assert (
        attrs["ome"]["version"] == "0.5"
        and attrs["slidefleet"]["model_id"] == report.model.model_id
    )
    node = next(iter(Reader(parse_url(str(store)))()))
    assert node.data[0].shape[0] == 1
