"""Ingest end to end on real files: pixels, NGFF validity, failures, idempotency, resumption."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest
import zarr

from engine.ingest import IngestParams, ingest
from engine.slides import open_slide
from engine.store import COMPLETION_FILE, read_completion
from tests.conftest import CMU_SMALL, SHARED_SLIDES, write_plain_tiff_slide

# What ../shared/slides/README.md says each real file must do.
EXPECTED = {
    "cmu1": ("openslide-testdata/CMU-1-Small-Region.svs", None, None),
    "small_svs": ("openslide-python/small.svs", None, None),
    "boxes_no_mpp": ("openslide-python/boxes.tiff", None, "MissingMpp"),
    "boxes_mpp": ("openslide-python/boxes.tiff", 0.5, None),
    "dicom_0": ("openslide-python/boxes_0.dcm", None, None),
    "dicom_1": ("openslide-python/boxes_1.dcm", None, None),
    "unopenable": ("openslide-python/unopenable.tiff", None, "SlideUnreadable"),
    "unreadable": ("openslide-python/unreadable.svs", None, "SlideUnreadable"),
    "sm_image": ("highdicom/sm_image.dcm", None, None),
    "grey16": ("highdicom/sm_image_grayscale.dcm", None, "SlideUnreadable"),
    "jpegls": ("highdicom/sm_image_jpegls.dcm", None, "SlideUnreadable"),
    "pathml": ("pathml/small_dicom.dcm", None, "SlideUnreadable"),
    "yb_no_mpp": ("large_image/yb10kx5k.zstd.tiff", None, "MissingMpp"),
    "yb": ("large_image/yb10kx5k.zstd.tiff", 0.25, None),
    "orient6": ("large_image/test_orient6.tif", 0.5, None),
    "zero": ("large_image/zero_gi.tif", None, "SlideUnreadable"),
}
MESSAGES = {
    "unopenable": "Unsupported TIFF compression",
    "unreadable": "Bogus marker length",
    "grey16": "BitsAllocated value 16 != 8",
    "jpegls": "Unsupported transfer syntax",
    "pathml": "Couldn't get image flavor",
    "boxes_no_mpp": "not a plausible microscope resolution",
}


def _write_manifest(path: Path, rows: list[dict[str, object]]) -> Path:
    columns = sorted(
        {key for row in rows for key in row},
        key=["slide_id", "path", "annotation", "split", "label", "mpp"].index,
    )
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join("" if row.get(c) is None else str(row[c]) for c in columns))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory: pytest.TempPathFactory, ray_session) -> tuple[Path, object]:
    work = tmp_path_factory.mktemp("shared_ingest")
    rows = [
        {"slide_id": sid, "path": SHARED_SLIDES / rel, "mpp": mpp}
        for sid, (rel, mpp, _) in EXPECTED.items()
    ]
    rows.append({"slide_id": "../escape", "path": CMU_SMALL})
    rows.append({"slide_id": "twice", "path": CMU_SMALL})
    rows.append({"slide_id": "twice", "path": CMU_SMALL})
    rows.append({"slide_id": "missing_file", "path": work / "nope.svs"})
    manifest = _write_manifest(work / "manifest.csv", rows)
    report = ingest(manifest, work / "root", progress=False)
    return work / "root", report


def test_every_shared_slide_is_converted_or_rejected_with_its_reason(shared_root) -> None:
    root, report = shared_root
    converted = {r.slide_id for r in report.results}
    failed = {f.slide_id: f for f in report.failures}
    for slide_id, (_, _, expected_error) in EXPECTED.items():
        if expected_error is None:
            assert slide_id in converted, f"{slide_id} should convert: {failed.get(slide_id)}"
            assert read_completion(root / "slides" / f"{slide_id}.ome.zarr") is not None
        else:
            assert failed[slide_id].error_type == expected_error
            assert MESSAGES.get(slide_id, "") in failed[slide_id].message
            assert not (root / "slides" / f"{slide_id}.ome.zarr").exists(), (
                "no half-written store may remain"
            )
    assert failed["../escape"].error_type == "InvalidSlideId"
    assert failed["twice"].error_type == "InvalidSlideId"
    assert failed["missing_file"].error_type == "SlideNotFound"
    # Nothing was written outside the root.
    assert sorted(p.name for p in root.parent.iterdir()) == ["manifest.csv", "root"]


def test_failures_table_is_a_parquet_dataset(shared_root) -> None:
    root, report = shared_root
    table = pads.dataset(
        root / "tables" / "failures", format="parquet", partitioning="hive"
    ).to_table()
    assert {"stage", "slide_id", "error_type", "message", "run_id"} <= set(table.column_names)
    rows = table.to_pylist()
    assert len(rows) == len(report.failures)
    assert {r["slide_id"] for r in rows} >= {
        "unopenable",
        "unreadable",
        "boxes_no_mpp",
        "../escape",
    }
    assert all(r["message"] for r in rows)


def test_level0_pixels_equal_openslide_exactly(shared_root) -> None:
    root, _ = shared_root
    store = zarr.open_group(root / "slides" / "cmu1.ome.zarr", mode="r")
    level0 = np.asarray(store["0"][:])
    with open_slide(CMU_SMALL) as slide:
        width, height = slide.info.width_px, slide.info.height_px
        raw = np.asarray(slide._slide.read_region((0, 0), 0, (width, height)))
    assert raw[..., 3].min() == 255  # opaque slide: RGB must match read_region byte for byte
    assert level0.shape == (3, height, width)
    # A sparse store (the default) holds level 0 only in the chunks it records; those are exact.
    chunk_px = store["0"].chunks[-1]
    grid = np.asarray(store["slidefleet-coverage/0"][:]).astype(bool)
    written = np.kron(grid, np.ones((chunk_px, chunk_px), bool))[:height, :width]
    assert written.mean() > 0.5
    np.testing.assert_array_equal(level0.transpose(1, 2, 0)[written], raw[..., :3][written])


def test_pyramid_scale_follows_mpp_and_real_downsamples(shared_root) -> None:
    root, _ = shared_root
    attrs = zarr.open_group(root / "slides" / "yb.ome.zarr", mode="r").attrs.asdict()
    multiscale = attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in multiscale["axes"]] == ["c", "y", "x"]
    scales = [d["coordinateTransformations"][0]["scale"] for d in multiscale["datasets"]]
    # yb10kx5k: 5 native levels; the last native downsample is 16.013 (not a power of two).
    with open_slide(SHARED_SLIDES / "large_image/yb10kx5k.zstd.tiff", mpp_override=0.25) as slide:
        dims = slide.info.level_dimensions_px
    assert len(scales) >= 5
    for level, (width, height) in enumerate(dims):
        assert scales[level][2] == pytest.approx(0.25 * 10000 / width)
        assert scales[level][1] == pytest.approx(0.25 * 5000 / height)
    assert scales[4][2] == pytest.approx(0.25 * 16.0, rel=0.01)
    assert attrs["slidefleet"]["mpp_source"] == "manifest"


def _ngff_validator(schema_name: str):
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    folder = resources.files("ngff_zarr") / "spec" / "0.5" / "schemas"
    schemas = {
        p.name: json.loads(p.read_text()) for p in folder.iterdir() if p.name.endswith(".schema")
    }
    registry = Registry().with_resources(
        (s["$id"], Resource.from_contents(s, default_specification=DRAFT202012))
        for s in schemas.values()
    )
    return jsonschema.Draft202012Validator(schemas[schema_name], registry=registry)


@pytest.mark.parametrize("slide_id", ["cmu1", "yb", "dicom_0"])
def test_stores_validate_against_ngff_05(shared_root, slide_id: str) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr_models.v05.image import Image

    root, _ = shared_root
    store = root / "slides" / f"{slide_id}.ome.zarr"
    image_attrs = json.loads((store / "zarr.json").read_text())["attributes"]
    label_attrs = json.loads((store / "labels" / "tissue" / "zarr.json").read_text())["attributes"]
    assert not list(_ngff_validator("strict_image.schema").iter_errors(image_attrs))
    assert not list(_ngff_validator("strict_label.schema").iter_errors(label_attrs))
    Image.from_zarr(zarr.open_group(store, mode="r"))  # raises on any inconsistency
    nodes = list(Reader(parse_url(str(store)))())
    image_node = nodes[0]
    assert image_node.data[0].shape[0] == 3
    assert any("Label" in [type(s).__name__ for s in n.specs] for n in nodes)


def test_rerun_skips_unchanged_and_redoes_changed_slides(tmp_path: Path, ray_session) -> None:
    rng = np.random.default_rng(1)
    tissue = np.full((600, 800, 3), 240, np.uint8)
    tissue[100:500, 150:650] = rng.integers(
        120, 200, size=(400, 500, 3), dtype=np.uint8
    ) * np.array([1, 0.5, 1])
    slide_a = write_plain_tiff_slide(tmp_path / "a.tiff", tissue, 0.5)
    slide_b = write_plain_tiff_slide(tmp_path / "b.tiff", tissue[::-1].copy(), 0.5)
    manifest = _write_manifest(
        tmp_path / "m.csv", [{"slide_id": "a", "path": slide_a}, {"slide_id": "b", "path": slide_b}]
    )
    root = tmp_path / "root"
    first = ingest(manifest, root, progress=False)
    assert sorted(r.slide_id for r in first.converted) == ["a", "b"]
    a_record = read_completion(root / "slides" / "a.ome.zarr")

    second = ingest(manifest, root, progress=False)
    assert sorted(r.slide_id for r in second.skipped) == ["a", "b"] and not second.converted

    changed = tissue.copy()
    changed[200:300, 200:300] = (90, 20, 120)
    write_plain_tiff_slide(slide_a, changed, 0.5)
    third = ingest(manifest, root, progress=False)
    assert [r.slide_id for r in third.converted] == ["a"]
    assert read_completion(root / "slides" / "a.ome.zarr")["input_key"] != a_record["input_key"]
    stored = np.asarray(zarr.open_group(root / "slides" / "a.ome.zarr", mode="r")["0"][:])
    np.testing.assert_array_equal(stored.transpose(1, 2, 0), changed)

    # Changed parameters redo every slide.
    fourth = ingest(manifest, root, params=IngestParams(annotation_mpp=4.0), progress=False)
    assert sorted(r.slide_id for r in fourth.converted) == ["a", "b"]


def test_half_written_stores_are_never_trusted(tmp_path: Path, ray_session) -> None:
    manifest = _write_manifest(tmp_path / "m.csv", [{"slide_id": "cmu", "path": CMU_SMALL}])
    root = tmp_path / "root"
    ingest(manifest, root, progress=False)
    store = root / "slides" / "cmu.ome.zarr"
    # A killed run can leave (a) a temporary build, (b) a store whose record is missing.
    leftover = root / "slides" / ".cmu.ome.zarr.tmp-deadbeef0000"
    shutil.copytree(store, leftover)
    (store / COMPLETION_FILE).unlink()
    shutil.rmtree(store / "1")  # damage it: a trusted store would now be broken
    report = ingest(manifest, root, progress=False)
    assert [r.slide_id for r in report.converted] == ["cmu"]
    assert not leftover.exists()
    assert np.asarray(zarr.open_group(store, mode="r")["1"][:]).shape[0] == 3


def test_blank_slide_fails_with_no_tissue(tmp_path: Path, ray_session) -> None:
    rng = np.random.default_rng(2)
    glass = np.clip(rng.normal(240, 2, size=(512, 512, 3)), 0, 255).astype(np.uint8)
    blank = write_plain_tiff_slide(tmp_path / "blank.tiff", glass, 0.5)
    manifest = _write_manifest(tmp_path / "m.csv", [{"slide_id": "blank", "path": blank}])
    report = ingest(manifest, tmp_path / "root", progress=False)
    (failure,) = report.failures
    assert failure.error_type == "NoTissue" and "blank glass" in failure.message
    assert not (tmp_path / "root" / "slides" / "blank.ome.zarr").exists()


def test_killed_run_resumes_without_losing_or_redoing_finished_slides(tmp_path: Path) -> None:
    """A real ingest process killed mid-cohort, then run again: all slides complete, none redone."""
    rng = np.random.default_rng(3)
    rows = []
    for index in range(6):
        image = np.full((1536, 1536, 3), 238, np.uint8)
        image[200:1300, 200:1300] = rng.integers(100, 200, size=(1100, 1100, 3), dtype=np.uint8)
        rows.append(
            {
                "slide_id": f"s{index}",
                "path": write_plain_tiff_slide(tmp_path / f"s{index}.tiff", image, 0.5),
            }
        )
    manifest = _write_manifest(tmp_path / "m.csv", rows)
    root = tmp_path / "root"
    command = [
        sys.executable,
        "-m",
        "engine.cli",
        "ingest",
        str(manifest),
        "--root",
        str(root),
        "--num-cpus",
        "1",
        "--quiet",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = (
            list((root / "slides").glob("*.ome.zarr/" + COMPLETION_FILE))
            if (root / "slides").exists()
            else []
        )
        if len(done) >= 2:
            break
        time.sleep(0.1)
    # Kill the whole run: the driver and every Ray process it started (GCS, raylet, workers).
    import psutil

    driver = psutil.Process(process.pid)
    doomed = [driver, *driver.children(recursive=True)]
    for proc in doomed:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(doomed, timeout=30)
    process.wait()
    finished_before = {
        p.parent.name for p in (root / "slides").glob("*.ome.zarr/" + COMPLETION_FILE)
    }
    assert 2 <= len(finished_before) < 6, "the kill should land mid-cohort"
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for row in rows:
        assert read_completion(root / "slides" / f"{row['slide_id']}.ome.zarr") is not None
    assert not [p for p in (root / "slides").iterdir() if p.name.startswith(".")]
    ingested = pads.dataset(root / "tables" / "ingested", format="parquet").to_table().to_pylist()
    last_run = max(r["run_id"] for r in ingested)
    redone = {r["slide_id"] for r in ingested if r["run_id"] == last_run and not r["skipped"]}
    assert redone == {row["slide_id"] for row in rows} - {
        name.removesuffix(".ome.zarr") for name in finished_before
    }
