"""Tiles are a function of their physical position only: exact resampling, a declared mpp tolerance.

A slide whose mpp is not the model's (0.46 µm/px against a 2 µm/px model: level 2 is 1.84 µm/px,
8 % finer) is resampled by one filter on physical coordinates; one at 0.499 µm/px is within the
3 % tolerance and its level 2 (1.996 µm/px) is read pixel for pixel. Either way the maps do not
depend on how the work is cut (``unit_tiles``), and the prediction records which way it went.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from engine.infer import InferParams, infer
from engine.infer.reading import model_frame, read_model_window, resample_taps
from engine.ingest import ingest
from engine.store.slide_store import SlideStore
from tests.infer_models import Darkness, DarkPatch, darkness_card, register

MODEL_MPP = 2.0  # darkness_card


@pytest.fixture(scope="module")
def off_mpp_fleet(
    tmp_path_factory: pytest.TempPathFactory, synth_cohort: Path, ray_session
) -> Path:
    """One synthetic slide ingested twice, with its mpp overridden to 0.46 and to 0.499."""
    work = tmp_path_factory.mktemp("off_mpp")
    slide = synth_cohort.parent / "slides" / "synth_001.tif"
    manifest = work / "manifest.csv"
    manifest.write_text(f"slide_id,path,mpp\nat046,{slide},0.46\nat0499,{slide},0.499\n")
    report = ingest(manifest, work / "root", progress=False)
    assert not report.failures
    return work / "root"


def test_model_frame_reads_within_tolerance_as_stored_and_resamples_otherwise(
    off_mpp_fleet: Path,
) -> None:
    near = model_frame(
        SlideStore.open(off_mpp_fleet / "slides" / "at0499.ome.zarr"), MODEL_MPP, 0.03
    )
    assert (near.resampled, near.source_level) == (False, "2")
    assert near.level0_per_model_px_x == pytest.approx(4.0)
    far = model_frame(SlideStore.open(off_mpp_fleet / "slides" / "at046.ome.zarr"), MODEL_MPP, 0.03)
    assert (far.resampled, far.source_level) == (True, "2")
    assert far.level0_per_model_px_x == pytest.approx(MODEL_MPP / 0.46)
    strict = model_frame(
        SlideStore.open(off_mpp_fleet / "slides" / "at0499.ome.zarr"), MODEL_MPP, 0.0
    )
    assert strict.resampled


def test_a_tile_reads_the_same_pixels_from_any_window(off_mpp_fleet: Path) -> None:
    store = SlideStore.open(off_mpp_fleet / "slides" / "at046.ome.zarr")
    frame = model_frame(store, MODEL_MPP, 0.03)
    level = store.level(frame.source_level)
    f = (frame.level0_per_model_px_x, frame.level0_per_model_px_y)
    tile = (137, 91, 128, 128)  # an odd place, model px
    alone = read_model_window(store, level, f, tile)
    for x0, y0 in [(0, 0), (17, 3), (100, 80), (129, 90)]:
        big = read_model_window(store, level, f, (x0, y0, 400, 300))
        np.testing.assert_array_equal(
            big[91 - y0 : 91 - y0 + 128, 137 - x0 : 137 - x0 + 128], alone
        )


def test_resampling_puts_each_model_pixel_at_its_physical_centre() -> None:
    # Each model pixel's filter is centred on its physical centre: a ramp (value = source index)
    # comes back within the sampling of a triangle 1.09 source px wide (the old floor-and-stretch
    # read was off by up to 0.59 px, varying with the tile's place in its unit).
    taps, weights = resample_taps(
        5, 50, level0_per_model_px=4.35, mpp=0.46, scale_um=1.84, translation_um=0.69
    )
    centre_um = ((5 + np.arange(50) + 0.5) * 4.35 - 0.5) * 0.46
    np.testing.assert_allclose((taps * weights).sum(axis=1), (centre_um - 0.69) / 1.84, atol=0.07)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    # Upsampling is bilinear, which reproduces a ramp exactly.
    taps, weights = resample_taps(
        0, 30, level0_per_model_px=0.5, mpp=1.0, scale_um=1.0, translation_um=0.0
    )
    np.testing.assert_allclose(
        (taps * weights).sum(axis=1), (np.arange(30) + 0.5) * 0.5 - 0.5, atol=1e-9
    )


def test_maps_do_not_depend_on_unit_tiles_and_record_how_tiles_were_read(
    off_mpp_fleet: Path,
) -> None:
    model = register(off_mpp_fleet, Darkness(), darkness_card("darkness-units"))
    maps: dict[int, dict[str, np.ndarray]] = {}
    for unit_tiles in (2, 3):
        shutil.rmtree(off_mpp_fleet / "predictions" / model.model_id, ignore_errors=True)
        report = infer(
            off_mpp_fleet, model.ref, progress=False, params=InferParams(unit_tiles=unit_tiles)
        )
        assert not report.failures and len(report.scored) == 2
        maps[unit_tiles] = {}
        for slide_id in ("at046", "at0499"):
            group = zarr.open_group(
                off_mpp_fleet / "predictions" / model.model_id / f"{slide_id}.zarr", mode="r"
            )
            maps[unit_tiles][slide_id] = np.asarray(group["0"][:])
            reading = group.attrs["slidefleet"]["tile_reading"]
            assert reading["resampled"] is (slide_id == "at046")
            assert reading["mpp_tolerance"] == 0.03 and reading["source_level"] == "2"
    for slide_id in ("at046", "at0499"):
        assert np.isfinite(maps[2][slide_id]).mean() > 0.2
        np.testing.assert_array_equal(maps[2][slide_id], maps[3][slide_id])


def test_the_tiles_table_places_tiles_on_the_grid_infer_read(
    off_mpp_fleet: Path, synth_cohort: Path
) -> None:
    """At 0.499 µm/px the tiles were read from a level as stored (4 level-0 px a model px): the
    table's boxes must sit on that grid (256 level-0 px a 64 px tile), not on 2.0 / 0.499."""
    from engine.models import ModelCard
    from engine.slides import open_slide
    from engine.tables import read_table
    from engine.tiles.stage import write_tiles

    card = ModelCard.model_validate(
        {
            "name": "dark-patch-0499",
            "version": "1",
            "kind": "patch_classifier",
            "class_names": ["light", "dark"],
            "tile_size_px": 64,
            "mpp": MODEL_MPP,
            "output_stride": 64,
            "output_activation": "none",
            "normalisation": {"input_scale": "0-1"},
            "description": "Test classifier.",
            "training_data": "none: fixed arithmetic for tests",
        }
    )
    model = register(off_mpp_fleet, DarkPatch(), card)
    assert not infer(off_mpp_fleet, model.ref, progress=False, slide_ids=["at0499"]).failures
    assert not write_tiles(off_mpp_fleet, model.ref).failures
    rows = [
        r
        for r in read_table(off_mpp_fleet / "tables", "tiles").to_pylist()
        if r["model_id"] == model.model_id and r["slide_id"] == "at0499"
    ]
    assert len(rows) > 4
    assert all(r["x"] % 256 == 0 and r["y"] % 256 == 0 for r in rows)
    full = [r for r in rows if r["width"] == r["height"] == 256]
    source = synth_cohort.parent / "slides" / "synth_001.tif"  # the fixture's slide
    with open_slide(source, mpp_override=0.499) as slide:
        for row in full[:: max(1, len(full) // 4)]:
            region = slide.read_region_rgb(row["x"], row["y"], 0, 256, 256)
            # the model saw level 2 (4x averaged), so its darkness is level 0's to rounding
            assert row["prob_dark"] == pytest.approx(1 - region.mean() / 255, abs=0.01)
