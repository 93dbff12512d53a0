"""Sparse stores: only chunks around tissue are converted, exactly, and infer never scores the rest."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from engine.infer import infer
from engine.ingest import IngestParams, convert_slide
from engine.ingest.pyramid import LevelPlan
from engine.ingest.sparse import close_downwards, dilate, plan_coverage, touching_chunks
from engine.manifest import read_manifest
from engine.models import ModelCard
from engine.slides import open_slide
from engine.store import FleetLayout
from engine.store.slide_store import COVERAGE_GROUP, SlideStore
from tests.conftest import CMU_SMALL
from tests.infer_models import Darkness, darkness_card, register

# Small chunks and margin so that a small slide has many unwritten chunks. Levels are decoded and
# re-encoded here (source_tiles off), so that every level goes through the chunk planning, the
# averaging and the codecs; stores that keep the slide's own tiles are tested in test_source_tiles.
SPARSE = IngestParams(chunk_px=256, block_px=1024, sparse_margin_um=160.0, source_tiles=False)
FULL = SPARSE.model_copy(update={"sparse": False})


def _level(index: int, size: int, ds: float, native: int | None) -> LevelPlan:
    return LevelPlan(index, size, size, ds, ds, native)


def test_chunks_touching_the_mask_are_exactly_those_overlapping_a_mask_pixel() -> None:
    mask = np.zeros((16, 16), bool)
    mask[5, 9] = True  # mask px = 8 level-0 px: covers level-0 [40, 48) x [72, 80)
    grid = touching_chunks(mask, (8.0, 8.0), _level(0, 128, 1.0, 0), chunk_px=32)
    assert grid.shape == (4, 4)
    assert np.argwhere(grid).tolist() == [[1, 2]]
    wide = touching_chunks(dilate(mask, 2), (8.0, 8.0), _level(0, 128, 1.0, 0), chunk_px=32)
    assert np.argwhere(wide).tolist() == [
        [0, 1],
        [0, 2],
        [1, 1],
        [1, 2],
    ]  # level-0 [24, 64) x [56, 96)


def test_a_computed_level_forces_the_chunks_it_is_averaged_from() -> None:
    mask = np.zeros((8, 8), bool)
    mask[0, 7] = True
    levels = [_level(0, 256, 1.0, 0), _level(1, 128, 2.0, None)]
    coverage = plan_coverage(mask, (32.0, 32.0), levels, chunk_px=64)
    # Level 1's chunk (0, 1) covers level-0 [0, 128) x [128, 256): all four level-0 chunks under it.
    assert np.argwhere(coverage[1]).tolist() == [[0, 1]]
    assert coverage[0][:2, 2:].all() and coverage[0].sum() == 4
    assert close_downwards(np.ones((1, 1), bool), (1, 2)).tolist() == [[True, True]]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from engine.synth import generate_cohort

    base = tmp_path_factory.mktemp("sparse")
    manifest = generate_cohort(
        base / "cohort", 1, seed=5, width_px=3072, height_px=3072, tissue_fraction=0.15
    )
    (entry,) = read_manifest(manifest).entries
    for name, params in (("sparse", SPARSE), ("full", FULL)):
        convert_slide(entry, FleetLayout(base / name), params)
    return base / "sparse", base / "full", entry.path


def _store(root: Path) -> zarr.Group:
    (path,) = (root / "slides").glob("*.ome.zarr")
    return zarr.open_group(path, mode="r")


def _written_px(group: zarr.Group, level: str, shape: tuple[int, int], chunk_px: int) -> np.ndarray:
    grid = np.asarray(group[f"{COVERAGE_GROUP}/{level}"][:]).astype(bool)
    return np.kron(grid, np.ones((chunk_px, chunk_px), bool))[: shape[0], : shape[1]]


def test_level0_equals_openslide_inside_written_chunks_and_is_glass_elsewhere(stores) -> None:
    sparse_root, _, slide_path = stores
    group = _store(sparse_root)
    level0 = np.asarray(group["0"][:])
    written = _written_px(group, "0", level0.shape[1:], SPARSE.chunk_px)
    assert 0.05 < written.mean() < 0.9, "the test slide must have both written and unwritten chunks"
    with open_slide(slide_path) as slide:
        raw = slide.read_region_rgb(0, 0, 0, slide.info.width_px, slide.info.height_px).transpose(
            2, 0, 1
        )
    np.testing.assert_array_equal(level0[:, written], raw[:, written])
    assert (level0[:, ~written] == 255).all()
    assert not (raw[:, ~written] == 255).all(), (
        "glass is not pure white: unwritten chunks were really skipped"
    )


def test_sparse_store_records_its_coverage_margin_and_complete_levels(stores) -> None:
    sparse_root, full_root, _ = stores
    sparse, full = _store(sparse_root), _store(full_root)
    meta = sparse.attrs["slidefleet"]
    provenance = meta["sparse"]
    assert provenance["enabled"] and provenance["margin_um"] == 160.0
    tissue_level = int(provenance["tissue_level"])
    finer = [
        level["path"]
        for index, level in enumerate(meta["levels"])
        if index < tissue_level
        and meta["mpp_x"] * level["downsample_x"] < provenance["complete_from_um"] * 0.99
    ]
    assert provenance["sparse_levels"] == finer and finer
    for level in meta["levels"]:
        path = level["path"]
        if path in provenance["sparse_levels"]:
            grid = np.asarray(sparse[f"{COVERAGE_GROUP}/{path}"][:]).astype(bool)
            assert level["materialised_fraction"] == pytest.approx(grid.mean())
            written = _written_px(sparse, path, sparse[path].shape[1:], SPARSE.chunk_px)
            a, b = np.asarray(sparse[path][:]), np.asarray(full[path][:])
            np.testing.assert_array_equal(a[:, written], b[:, written])
        else:  # the tissue level and coarser: complete and identical to the full store
            assert level["materialised_fraction"] == 1.0
            np.testing.assert_array_equal(sparse[path][:], full[path][:])
    np.testing.assert_array_equal(sparse["labels/tissue/0"][:], full["labels/tissue/0"][:])
    assert full.attrs["slidefleet"]["sparse"]["enabled"] is False and COVERAGE_GROUP not in full
    assert meta["decoded_megapixels"] < full.attrs["slidefleet"]["decoded_megapixels"]


def test_sparse_parameters_are_part_of_the_store_key() -> None:
    hashes = {
        SPARSE.output_hash(),
        FULL.output_hash(),
        SPARSE.model_copy(update={"sparse_margin_um": 96.0}).output_hash(),
    }
    assert len(hashes) == 3
    assert SPARSE.model_copy(update={"cpus_per_slide": 7}).output_hash() == SPARSE.output_hash()


def test_rerun_with_other_thread_counts_gives_identical_stores(stores, tmp_path: Path) -> None:
    sparse_root, _, slide_path = stores
    (entry,) = read_manifest(slide_path.parent.parent / "manifest.csv").entries
    convert_slide(entry, FleetLayout(tmp_path), SPARSE.model_copy(update={"cpus_per_slide": 1}))
    again, first = _store(tmp_path), _store(sparse_root)
    provenance = first.attrs["slidefleet"]["sparse"]
    for path in provenance["sparse_levels"] + [provenance["tissue_level"]]:
        np.testing.assert_array_equal(again[path][:], first[path][:])
        if path in provenance["sparse_levels"]:
            np.testing.assert_array_equal(
                again[f"{COVERAGE_GROUP}/{path}"][:], first[f"{COVERAGE_GROUP}/{path}"][:]
            )


def test_a_level_computed_without_storing_the_levels_in_between_equals_the_full_pyramid(
    tmp_path: Path,
) -> None:
    # CMU-1-Small-Region has one native level: the tissue level is averaged straight from level 0.
    (entry,) = read_manifest(_manifest(tmp_path, CMU_SMALL)).entries
    params = IngestParams(sparse_margin_um=0.0, source_tiles=False)
    convert_slide(entry, FleetLayout(tmp_path / "sparse"), params)
    convert_slide(
        entry, FleetLayout(tmp_path / "full"), params.model_copy(update={"sparse": False})
    )
    sparse, full = _store(tmp_path / "sparse"), _store(tmp_path / "full")
    tissue_level = sparse.attrs["slidefleet"]["sparse"]["tissue_level"]
    assert (
        tissue_level != "0"
        and sparse.attrs["slidefleet"]["levels"][int(tissue_level)]["native_level"] is None
    )
    np.testing.assert_array_equal(sparse[tissue_level][:], full[tissue_level][:])
    # Level 0 was decoded once for that, kept, then pruned to the chunks touching tissue.
    assert (
        sparse.attrs["slidefleet"]["decoded_megapixels"]
        == full.attrs["slidefleet"]["decoded_megapixels"]
    )
    level0, full0 = np.asarray(sparse["0"][:]), np.asarray(full["0"][:])
    written = _written_px(sparse, "0", level0.shape[1:], sparse["0"].chunks[-1])
    assert 0 < written.mean() < 1
    np.testing.assert_array_equal(level0[:, written], full0[:, written])
    assert (level0[:, ~written] == 255).all()
    stored = [p for p in (Path(sparse.store.root) / "0" / "c").rglob("*") if p.is_file()]
    assert len(stored) <= int(np.asarray(sparse[f"{COVERAGE_GROUP}/0"][:]).sum())


def _manifest(folder: Path, slide: Path) -> Path:
    path = folder / "manifest.csv"
    path.write_text(f"slide_id,path\ncmu,{slide}\n")
    return path


def _fill_unwritten(store_path: Path, value: int) -> None:
    """Paint every chunk a sparse store did not write with ``value`` (what a wrong read would see)."""
    group = zarr.open_group(store_path, mode="r+")
    for path in group.attrs["slidefleet"]["sparse"]["sparse_levels"]:
        array = group[path]
        written = _written_px(group, path, array.shape[1:], SPARSE.chunk_px)
        data = np.asarray(array[:])
        data[:, ~written] = value
        array[:] = data


def test_infer_never_reads_an_unconverted_chunk(stores, tmp_path: Path, ray_session) -> None:
    sparse_root, _, _ = stores
    painted = tmp_path / "painted"
    shutil.copytree(sparse_root, painted)
    (store_path,) = (painted / "slides").glob("*.ome.zarr")
    _fill_unwritten(store_path, 0)  # black: the darkness model would see any read of it
    card = darkness_card("darkness").model_dump()
    card.update(tile_size_px=64)  # 64 px at 2 µm = 128 µm: inside the 160 µm margin
    small = ModelCard.model_validate(card)
    results = {}
    for root in (sparse_root, painted):
        model = register(root, Darkness(), small)
        report = infer(root, model.ref, progress=False)
        assert not report.failures and report.tiles > 0
        (pred,) = (root / "predictions" / model.model_id).glob("*.zarr")
        results[root] = np.asarray(zarr.open_group(pred, mode="r")["0"][:])
    np.testing.assert_array_equal(results[sparse_root], results[painted])
    store = SlideStore.open(store_path)
    assert store.chunk_coverage(store.levels[0]) is not None


def test_a_model_wider_than_the_margin_is_refused_with_the_margin_it_needs(
    stores, ray_session
) -> None:
    sparse_root, full_root, _ = stores
    card = darkness_card("wide").model_dump()
    card.update(tile_size_px=1024, mpp=0.5)  # 1024 px at 0.5 µm = 512 µm, beyond the 160 µm margin
    wide = ModelCard.model_validate(card)
    report = infer(sparse_root, register(sparse_root, Darkness(), wide).ref, progress=False)
    (failure,) = report.failures
    assert failure.error_type == "UnmaterialisedRegion" and not report.scored
    assert "sparse_margin_um" in failure.message and "528" in failure.message
    report = infer(full_root, register(full_root, Darkness(), wide).ref, progress=False)
    assert not report.failures and report.scored


def test_compact_jpeg_mode_is_smaller_close_to_the_slide_and_readable_in_a_fresh_process(
    stores, tmp_path
) -> None:
    import json
    import subprocess
    import sys

    sparse_root, _, slide_path = stores
    (entry,) = read_manifest(slide_path.parent.parent / "manifest.csv").entries
    result = convert_slide(
        entry, FleetLayout(tmp_path), SPARSE.model_copy(update={"codec": "jpeg"})
    )
    assert SPARSE.model_copy(update={"codec": "jpeg"}).output_hash() != SPARSE.output_hash()
    meta = json.loads((Path(result.store_path) / "0" / "zarr.json").read_text())
    assert meta["codecs"][0]["name"] == "slidefleet.jpeg"
    code = (
        "import sys, numpy as np, zarr, engine.store; "
        "print(np.asarray(zarr.open_array(sys.argv[1], mode='r')[:]).astype(np.int64).sum())"
    )
    total = subprocess.run(
        [sys.executable, "-c", code, str(Path(result.store_path) / "0")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    group = zarr.open_group(result.store_path, mode="r")
    level0 = np.asarray(group["0"][:])
    assert int(total) == level0.astype(np.int64).sum()
    written = _written_px(group, "0", level0.shape[1:], SPARSE.chunk_px)
    lossless = np.asarray(_store(sparse_root)["0"][:])
    error = np.abs(level0[:, written].astype(np.int16) - lossless[:, written]).mean()
    assert 0 < error < 3.0
    jpeg_bytes = sum(
        p.stat().st_size for p in (Path(result.store_path) / "0").rglob("*") if p.is_file()
    )
    (lossless_store,) = (sparse_root / "slides").glob("*.ome.zarr")
    zstd_bytes = sum(p.stat().st_size for p in (lossless_store / "0").rglob("*") if p.is_file())
    assert jpeg_bytes < zstd_bytes / 2
