"""Synthetic cohort generator: slides OpenSlide reads, honest ground truth, determinism, memory."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import openslide
import pytest
import shapely
from shapely.geometry import Polygon

from engine.synth import (
    BURDEN_CLASSES,
    GLASS,
    MANIFEST_COLUMNS,
    TISSUE,
    TUMOUR,
    assign_splits,
    burden_class_of,
    generate_cohort,
    label_region,
    make_slide_spec,
    plan_cohort,
    render_patch,
    render_region,
)
from engine.synth.raster import EdgeTable, rasterise
from engine.synth.shapes import random_blob

COHORT_SEED = 11
COHORT_SIZE = (4096, 3072)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four slides (one per burden class); returns the manifest path."""
    out = tmp_path_factory.mktemp("cohort")
    width, height = COHORT_SIZE
    return generate_cohort(out, 4, COHORT_SEED, width_px=width, height_px=height, mpp=0.5)


def _rows(manifest: Path) -> list[dict[str, str]]:
    with manifest.open(newline="") as f:
        return list(csv.DictReader(f))


def _specs() -> dict[str, object]:
    width, height = COHORT_SIZE
    specs = plan_cohort(4, COHORT_SEED, width_px=width, height_px=height, mpp=0.5)
    return {s.slide_id: s for s in specs}


def _rgb(
    slide: openslide.OpenSlide, xy: tuple[int, int], level: int, size: tuple[int, int]
) -> np.ndarray:
    return np.asarray(slide.read_region(xy, level, size).convert("RGB")).astype(np.int16)


# --- training patches ------------------------------------------------------------------------


@pytest.mark.parametrize("tumour", [True, False, None])
def test_render_patch_shapes_and_classes(tumour: bool | None) -> None:
    rng = np.random.default_rng(3)
    for _ in range(6):
        rgb, mask = render_patch(rng, size_px=96, mpp=1.0, tumour=tumour)
        assert rgb.shape == (96, 96, 3)
        assert rgb.dtype == np.uint8
        assert mask.shape == (96, 96)
        assert mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {GLASS, TISSUE, TUMOUR}
        if tumour is True:
            assert np.mean(mask == TUMOUR) >= 0.05
        if tumour is False:
            assert not (mask == TUMOUR).any()


def test_render_patch_is_deterministic_for_a_generator_state() -> None:
    a = render_patch(np.random.default_rng(5), 64, 0.5, tumour=True)
    b = render_patch(np.random.default_rng(5), 64, 0.5, tumour=True)
    assert np.array_equal(a[0], b[0])
    assert np.array_equal(a[1], b[1])


def test_patch_tumour_is_darker_and_more_purple_than_stroma() -> None:
    rng = np.random.default_rng(8)
    tumour_px, stroma_px = [], []
    for _ in range(12):
        rgb, mask = render_patch(rng, 128, 0.5, tumour=True)
        tumour_px.append(rgb[mask == TUMOUR])
        stroma_px.append(rgb[mask == TISSUE])
    t = np.concatenate(tumour_px).astype(float).mean(axis=0)
    s = np.concatenate(stroma_px).astype(float).mean(axis=0)
    assert t.sum() < 0.85 * s.sum()  # darker
    assert t[2] / t.sum() > s[2] / s.sum()  # bluer share: haematoxylin purple, not eosin pink


# --- geometry ------------------------------------------------------------------------------


def test_rasterise_agrees_with_shapely_at_pixel_centres() -> None:
    rng = np.random.default_rng(0)
    blob = random_blob(rng, (150.0, 120.0), 90.0, aspect=1.7, roughness=0.3)
    blob = shapely.set_precision(blob, 0.25)
    for downsample in (1.0, 2.0, 3.0):
        mask = rasterise(EdgeTable.from_geometry(blob), 20.0, 10.0, 140, 120, downsample)
        xs = 20.0 + (np.arange(140) + 0.5) * downsample
        ys = 10.0 + (np.arange(120) + 0.5) * downsample
        grid_x, grid_y = np.meshgrid(xs, ys)
        expected = shapely.contains_xy(blob, grid_x, grid_y)
        rows, cols = np.nonzero(mask != expected)
        # Only centres exactly on an edge may differ (shapely counts the boundary as outside).
        on_edge = shapely.distance(
            blob.boundary, shapely.points(grid_x[rows, cols], grid_y[rows, cols])
        )
        assert np.all(on_edge < 1e-9)


def test_burden_classes_are_reached_and_measured_from_polygons() -> None:
    specs = plan_cohort(8, 4, width_px=3072, height_px=2048)
    assert {s.burden_class for s in specs[:4]} == set(BURDEN_CLASSES)
    for spec in specs:
        tissue_area = spec.tissue.area
        assert 0.2 <= tissue_area / (spec.width_px * spec.height_px) <= 0.6
        fraction = shapely.intersection(spec.tumour, spec.tissue).area / tissue_area
        assert burden_class_of(fraction) == spec.burden_class
        assert fraction == pytest.approx(spec.tumour_fraction)
        # Tumour lies inside tissue (up to the 0.25 px vertex grid).
        assert shapely.difference(spec.tumour, spec.tissue).area <= 1e-3 * max(spec.tumour.area, 1)


@pytest.mark.parametrize("n", range(1, 21))
def test_splits_are_deterministic_and_cover_calibration_and_test(n: int) -> None:
    splits = assign_splits(n)
    assert splits == assign_splits(n)
    assert len(splits) == n
    assert set(splits) <= {"train", "calibration", "test"}
    if n >= 3:
        assert {"train", "calibration", "test"} <= set(splits)


def test_regions_agree_across_tile_borders_exactly() -> None:
    spec = make_slide_spec(
        "t", width_px=3000, height_px=2000, mpp=0.5, seed=2, burden_class="macro"
    )
    cx, cy = (int(v) for v in spec.tumour.geoms[0].exterior.coords[0])
    for ds in (1, 4):
        x0, y0 = (cx // (64 * ds)) * 64 * ds, (cy // (64 * ds)) * 64 * ds
        whole = render_region(spec, x0, y0, 256, 192, ds)
        top_left = render_region(spec, x0, y0, 128, 96, ds)
        right = render_region(spec, x0 + 128 * ds, y0, 128, 192, ds)
        bottom_left = render_region(spec, x0, y0 + 96 * ds, 128, 96, ds)
        stitched = np.concatenate([np.concatenate([top_left, bottom_left], 0), right], 1)
        assert np.array_equal(whole, stitched)


def test_lower_levels_look_like_averaged_level_0() -> None:
    spec = make_slide_spec(
        "t", width_px=2048, height_px=2048, mpp=0.5, seed=9, burden_class="macro"
    )
    level0 = render_region(spec, 0, 0, 2048, 2048, 1).astype(float)
    level3 = render_region(spec, 0, 0, 256, 256, 8).astype(float)
    pooled = level0.reshape(256, 8, 256, 8, 3).mean(axis=(1, 3))
    assert np.abs(pooled - level3).mean(axis=(0, 1)).max() < 12.0
    assert np.abs(pooled.mean(axis=(0, 1)) - level3.mean(axis=(0, 1))).max() < 6.0


# --- written slides ------------------------------------------------------------------------


def test_manifest_columns_paths_and_labels(cohort: Path) -> None:
    rows = _rows(cohort)
    assert tuple(rows[0]) == MANIFEST_COLUMNS
    assert [r["burden"] for r in rows] == ["macro", "none", "small", "micro"]
    assert {r["split"] for r in rows} == {"train", "calibration", "test"}
    for r in rows:
        for key in ("path", "annotation", "annotation_xml"):
            assert not Path(r[key]).is_absolute()
            assert (cohort.parent / r[key]).is_file()
        assert r["label"] == ("normal" if r["burden"] == "none" else "tumor")
        assert burden_class_of(float(r["tumor_fraction"])) == r["burden"]


def test_openslide_reads_pyramid_and_mpp(cohort: Path) -> None:
    for r in _rows(cohort):
        with openslide.OpenSlide(cohort.parent / r["path"]) as slide:
            assert slide.dimensions == COHORT_SIZE
            assert slide.level_count >= 3
            assert slide.level_downsamples[:3] == pytest.approx((1.0, 2.0, 4.0), rel=1e-3)
            assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.5)
            assert float(slide.properties[openslide.PROPERTY_NAME_MPP_Y]) == pytest.approx(0.5)


def test_openslide_pixels_match_rendering_across_tile_borders(cohort: Path) -> None:
    specs = _specs()
    row = _rows(cohort)[0]  # macro
    spec = specs[row["slide_id"]]
    cx, cy = (int(v) for v in spec.tumour.geoms[0].exterior.coords[0])
    x, y = cx // 256 * 256 - 100, cy // 256 * 256 - 100  # straddles a tile corner
    with openslide.OpenSlide(cohort.parent / row["path"]) as slide:
        for level, ds in ((0, 1), (1, 2)):
            read = _rgb(slide, (x, y), level, (200, 200))
            rendered = render_region(spec, x, y, 200, 200, ds).astype(np.int16)
            err = np.abs(read - rendered)
            assert err.mean() < 4.0  # JPEG q85
            assert np.percentile(err, 99) < 20
            # No seam: the jump across the tile border is no bigger than elsewhere.
            col = 100 if level == 0 else 50
            seam = np.abs(np.diff(read[:, col - 1 : col + 1], axis=1)).mean()
            assert seam < 3 * np.abs(np.diff(read, axis=1)).mean() + 5


def test_tumour_is_darker_and_more_purple_in_the_slide(cohort: Path) -> None:
    specs = _specs()
    row = _rows(cohort)[0]
    spec = specs[row["slide_id"]]
    x0, y0, x1, y1 = (int(v) for v in spec.tumour.bounds)
    w, h = min(x1 - x0, 1024), min(y1 - y0, 1024)
    with openslide.OpenSlide(cohort.parent / row["path"]) as slide:
        rgb = _rgb(slide, (x0, y0), 0, (w, h)).astype(float)
    labels = label_region(spec, x0, y0, w, h)
    t = rgb[labels == TUMOUR].mean(axis=0)
    s = rgb[labels == TISSUE].mean(axis=0)
    g = rgb[labels == GLASS].mean(axis=0) if (labels == GLASS).any() else np.full(3, 240.0)
    assert t.sum() < 0.85 * s.sum() < 0.85 * g.sum()
    assert t[2] / t.sum() > s[2] / s.sum()
    assert g.min() > 215  # near-white glass


def test_annotations_parse_agree_and_lie_within_the_slide(cohort: Path) -> None:
    specs = _specs()
    for r in _rows(cohort):
        spec = specs[r["slide_id"]]
        doc = json.loads((cohort.parent / r["annotation"]).read_text())
        assert doc["type"] == "FeatureCollection"
        geo = []
        for feature in doc["features"]:
            assert feature["geometry"]["type"] == "Polygon"
            assert feature["properties"]["classification"]["name"] == "Tumor"
            geo.append(Polygon(feature["geometry"]["coordinates"][0]))
        root = ET.parse(cohort.parent / r["annotation_xml"]).getroot()
        xml = []
        for ann in root.iter("Annotation"):
            assert ann.get("PartOfGroup") == "Tumor"
            assert ann.get("Type") == "Polygon"
            pts = sorted(ann.iter("Coordinate"), key=lambda c: int(c.get("Order", "0")))
            xml.append(Polygon([(float(c.get("X", "")), float(c.get("Y", ""))) for c in pts]))
        assert len(geo) == len(xml) == len(spec.tumour.geoms)
        assert (len(geo) == 0) == (r["label"] == "normal")
        frame = shapely.box(0, 0, spec.width_px, spec.height_px)
        for a, b in zip(geo, xml, strict=True):
            assert a.is_valid
            assert frame.contains(a)
            assert shapely.symmetric_difference(a, b).area < 1e-6 * a.area
        if geo:
            union = shapely.union_all(geo)
            fraction = shapely.intersection(union, spec.tissue).area / spec.tissue.area
            assert fraction == pytest.approx(float(r["tumor_fraction"]), abs=1e-6)


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    kwargs = {"width_px": 2048, "height_px": 1536}
    generate_cohort(tmp_path / "a", 2, 5, workers=1, **kwargs)
    generate_cohort(tmp_path / "b", 2, 5, workers=2, **kwargs)
    generate_cohort(tmp_path / "c", 2, 6, workers=1, **kwargs)
    a, b, c = (_digest(tmp_path / n) for n in "abc")
    assert len(a) == 1 + 2 * 3  # manifest, and per slide: tif, geojson, xml
    assert a == b
    assert a["slides/synth_000.tif"] != c["slides/synth_000.tif"]


# --- memory --------------------------------------------------------------------------------

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    import numpy, openslide, shapely, tifffile, imagecodecs
    from engine.synth import make_slide_spec, write_slide
    side = int(sys.argv[2])
    spec = make_slide_spec("m", width_px=side, height_px=side, mpp=0.5, seed=1, burden_class="micro")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    write_slide(spec, Path(sys.argv[1]), workers=2)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) / 1024)
    """
)


def _peak_growth_mb(tmp_path: Path, side_px: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(tmp_path / "m.tif"), str(side_px)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return float(out.stdout.strip().splitlines()[-1])


def test_writing_streams_in_bounded_memory(tmp_path: Path) -> None:
    # Level 0 alone would be 8,192² × 3 B = 201 MB in memory; streaming needs ~15 MB at any size.
    assert _peak_growth_mb(tmp_path, 8192) < 60


@pytest.mark.slow
def test_writing_a_20k_slide_stays_small(tmp_path: Path) -> None:
    # Level 0 alone would be 1.2 GB in memory.
    assert _peak_growth_mb(tmp_path, 20000) < 300
