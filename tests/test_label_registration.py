"""Label pyramids are registered: every stored level agrees with the truth at its own pixel centres.

Random polygons are rasterised at level 0 (the label's base) with the ingest rasteriser; every
coarser level must then agree with the polygon test at *that level's* pixel centres, as its NGFF
``scale`` / ``translation`` place them, except where the polygon boundary passes within half a
pixel of the level (the brief's bound) — and, for centres inside the base, within one base pixel
(what sampling at the centre allows; a top-left pick misses by ``(f - 1)/2`` base pixels).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import shapely
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon

from engine.annotations.rasterise import fill_even_odd, ring_edges
from engine.ingest.convert import _label_pyramid
from engine.ingest.params import IngestParams
from engine.ingest.pyramid import downsample_labels, downsample_nearest_2x
from engine.store import ngff


def _random_polygons(
    rng: np.random.Generator, width: float, height: float, count: int
) -> list[Polygon]:
    """Star-shaped random polygons (some with a hole), made interior-disjoint by a union."""
    parts = []
    for _ in range(count):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        radius = rng.uniform(3, min(width, height) / 3)
        n = int(rng.integers(5, 14))
        angles = np.sort(rng.uniform(0, 2 * math.pi, n))
        radii = radius * rng.uniform(0.4, 1.0, n)
        shell = np.c_[cx + radii * np.cos(angles), cy + radii * np.sin(angles)]
        hole = None
        if rng.random() < 0.3:
            hole = [np.c_[cx + 0.2 * radius * np.cos(angles), cy + 0.2 * radius * np.sin(angles)]]
        polygon = Polygon(shell, hole).buffer(0)
        if not polygon.is_empty:
            parts.append(polygon)
    union = shapely.union_all(parts)
    return [
        g for g in getattr(union, "geoms", [union]) if isinstance(g, Polygon) and not g.is_empty
    ]


def _inside(polygons: list[Polygon], cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    return fill_even_odd(ring_edges(polygons), cx, cy)


def _boundary_distance(polygons: list[Polygon], cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    boundary = shapely.union_all([p.boundary for p in polygons])
    xx, yy = np.meshgrid(cx, cy)
    return shapely.distance(shapely.points(xx, yy), boundary)


def _level_centres(
    attrs: dict, index: int, shape: tuple[int, int], base_scale: float, base_translation: float
):
    """Centres of a stored level in base-pixel *edge* coordinates (pixel k spans [k, k+1)), from NGFF."""
    dataset = attrs["ome"]["multiscales"][0]["datasets"][index]
    transforms = {t["type"]: t for t in dataset["coordinateTransformations"]}
    (sy, sx), (ty, tx) = (
        transforms["scale"]["scale"][-2:],
        transforms["translation"]["translation"][-2:],
    )
    # physical -> base centre index -> base edge coordinate
    cy = (ty + np.arange(shape[0]) * sy - base_translation) / base_scale + 0.5
    cx = (tx + np.arange(shape[1]) * sx - base_translation) / base_scale + 0.5
    return cy, cx


def _check_levels(
    group: zarr.Group, polygons: list[Polygon], base_scale: float, base_translation: float
) -> None:
    attrs = dict(group.attrs)
    base_h, base_w = group["0"].shape
    for index in range(len(attrs["ome"]["multiscales"][0]["datasets"])):
        level = np.asarray(group[str(index)][:]).astype(bool)
        cy, cx = _level_centres(attrs, index, level.shape, base_scale, base_translation)
        truth = _inside(polygons, cx, cy)
        wrong = level != truth
        if not wrong.any():
            continue
        distance = _boundary_distance(polygons, cx, cy)
        half_pixel = 0.5 * 2**index  # this level's half pixel, in base px
        assert (distance[wrong] <= half_pixel + 1e-9).all(), (
            f"level {index}: mismatch far from any edge"
        )
        inner = (cy[:, None] < base_h - 0.5) & (cx[None, :] < base_w - 0.5)
        worst = float(distance[wrong & inner].max(initial=0.0))
        assert worst <= math.sqrt(0.5) + 1e-9, (
            f"level {index}: a label {worst:.2f} base px from an edge is wrong"
        )


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), width=st.integers(40, 300), height=st.integers(40, 300))
def test_every_label_level_agrees_with_polygons_at_its_pixel_centres(
    seed: int, width: int, height: int
) -> None:
    rng = np.random.default_rng(seed)
    polygons = _random_polygons(rng, width, height, int(rng.integers(1, 6)))
    base = _inside(polygons, np.arange(width) + 0.5, np.arange(height) + 0.5).astype(np.uint8)
    params = IngestParams(chunk_px=64, block_px=128)
    group = zarr.open_group(store={}, mode="w", zarr_format=3)
    array = group.create_array("0", shape=base.shape, dtype="uint8", chunks=(64, 64), fill_value=0)
    array[:] = base
    count = _label_pyramid(group, array, params, 6)
    mpp, ds = 0.5, 4.0  # a label base 4x coarser than level 0, as ingest writes them
    group.attrs["ome"] = ngff.label_attributes(
        "t", [ngff.level_scale(str(i), mpp, mpp, ds * 2**i, ds * 2**i) for i in range(count)]
    )
    base_level = ngff.level_scale("0", mpp, mpp, ds, ds)
    _check_levels(group, polygons, base_level.scale_x_um, base_level.translation_x_um)


def test_whole_array_downsample_matches_blockwise_pyramid() -> None:
    rng = np.random.default_rng(3)
    labels = (rng.random((133, 97)) < 0.4).astype(np.uint8) * rng.integers(1, 4, (133, 97)).astype(
        np.uint8
    )
    group = zarr.open_group(store={}, mode="w", zarr_format=3)
    array = group.create_array(
        "0", shape=labels.shape, dtype="uint8", chunks=(64, 64), fill_value=0
    )
    array[:] = labels
    _label_pyramid(group, array, IngestParams(chunk_px=64, block_px=128), 4)
    np.testing.assert_array_equal(group["1"][:], downsample_nearest_2x(labels))
    for k in (2, 3):
        np.testing.assert_array_equal(group[str(k)][:], downsample_labels(labels, 2**k))


def test_a_two_by_two_tie_goes_to_the_bottom_right_pixel() -> None:
    # A horizontal edge on the coarse centre: the rasteriser puts a centre on a top edge inside.
    block = np.array([[0, 0], [1, 1]], np.uint8)
    assert downsample_nearest_2x(block)[0, 0] == 1
    assert downsample_nearest_2x(np.array([[1, 1], [0, 0]], np.uint8))[0, 0] == 0
    assert downsample_nearest_2x(np.array([[2, 2], [2, 1]], np.uint8))[0, 0] == 2  # majority wins


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Polygon]]:
    """A real slide (pink polygons on glass) with the same polygons as a GeoJSON annotation."""
    from engine.ingest.convert import convert_slide
    from engine.manifest import SlideEntry
    from engine.store import FleetLayout
    from tests.conftest import write_plain_tiff_slide

    work = tmp_path_factory.mktemp("registration")
    rng = np.random.default_rng(11)
    width, height = 3000, 2200
    polygons = _random_polygons(rng, width, height, 6)
    inside = _inside(polygons, np.arange(width) + 0.5, np.arange(height) + 0.5)
    rgb = np.full((height, width, 3), 245, np.uint8)
    rgb[inside] = (200, 90, 160)
    slide = write_plain_tiff_slide(work / "s.tiff", rgb, 0.5)
    features = [
        {
            "type": "Feature",
            "properties": {"classification": {"name": "Tumor"}},
            "geometry": shapely.geometry.mapping(p),
        }
        for p in polygons
    ]
    annotation = work / "s.geojson"
    annotation.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    entry = SlideEntry(slide_id="s", path=slide, annotation=annotation)
    params = IngestParams(chunk_px=256, block_px=512, min_level_px=64, annotation_mpp=2.0)
    convert_slide(entry, FleetLayout(work / "root"), params)
    return work / "root" / "slides" / "s.ome.zarr", polygons


def test_ingested_annotation_levels_agree_with_polygons_at_their_centres(ingested) -> None:
    store, polygons = ingested
    group = zarr.open_group(store / "labels" / "annotation", mode="r")
    assert len(group.attrs["ome"]["multiscales"][0]["datasets"]) >= 4
    # polygons are in level-0 px; level 0 of the slide has scale 0.5 µm and translation 0.
    _check_levels_level0(group, polygons, mpp=0.5)


def _check_levels_level0(group: zarr.Group, polygons: list[Polygon], mpp: float) -> None:
    attrs = dict(group.attrs)
    datasets = attrs["ome"]["multiscales"][0]["datasets"]
    for index, dataset in enumerate(datasets):
        level = np.asarray(group[dataset["path"]][:]).astype(bool)
        cy, cx = _level_centres(attrs, index, level.shape, mpp, 0.0)
        truth = _inside(polygons, cx, cy)
        wrong = level != truth
        transforms = {t["type"]: t for t in dataset["coordinateTransformations"]}
        level_px = transforms["scale"]["scale"][-1] / mpp
        base_px = (
            datasets
            and {t["type"]: t for t in datasets[0]["coordinateTransformations"]}["scale"]["scale"][
                -1
            ]
            / mpp
        )
        if wrong.any():
            distance = _boundary_distance(polygons, cx, cy)
            assert (distance[wrong] <= 0.5 * level_px + 1e-6).all(), (
                f"level {index}: mismatch far from an edge"
            )
            inner = (cy[:, None] < group["0"].shape[0] * base_px - base_px) & (
                cx[None, :] < group["0"].shape[1] * base_px - base_px
            )
            assert (
                float(distance[wrong & inner].max(initial=0.0)) <= math.sqrt(0.5) * base_px + 1e-6
            )


def test_ingested_tissue_levels_are_the_tissue_base_at_their_centres(ingested) -> None:
    """Image-derived labels: each tissue level is its base sampled at the level's own centres."""
    store, _ = ingested
    group = zarr.open_group(store / "labels" / "tissue", mode="r")
    datasets = group.attrs["ome"]["multiscales"][0]["datasets"]
    base = np.asarray(group["0"][:]).astype(bool)
    assert 0.05 < base.mean() < 0.95
    transforms0 = {t["type"]: t for t in datasets[0]["coordinateTransformations"]}
    s0, t0 = transforms0["scale"]["scale"][-1], transforms0["translation"]["translation"][-1]
    for index, dataset in enumerate(datasets[1:], start=1):
        level = np.asarray(group[dataset["path"]][:]).astype(bool)
        transforms = {t["type"]: t for t in dataset["coordinateTransformations"]}
        (sy, sx), (ty, tx) = transforms["scale"]["scale"], transforms["translation"]["translation"]
        # Centre of each level pixel in base centre-index coordinates, from the metadata alone.
        by = (ty + np.arange(level.shape[0]) * sy - t0) / s0
        bx = (tx + np.arange(level.shape[1]) * sx - t0) / s0
        inner_y, inner_x = by <= base.shape[0] - 1, bx <= base.shape[1] - 1
        # The four base pixels around each centre; where they agree, the level must equal them.
        y_lo = np.clip(np.floor(by).astype(int), 0, base.shape[0] - 1)
        y_hi = np.clip(np.ceil(by).astype(int), 0, base.shape[0] - 1)
        x_lo = np.clip(np.floor(bx).astype(int), 0, base.shape[1] - 1)
        x_hi = np.clip(np.ceil(bx).astype(int), 0, base.shape[1] - 1)
        quads = [base[np.ix_(a, b)] for a in (y_lo, y_hi) for b in (x_lo, x_hi)]
        agree = np.all([q == quads[0] for q in quads], axis=0) & inner_y[:, None] & inner_x[None, :]
        assert agree.mean() > 0.5
        np.testing.assert_array_equal(
            level[agree], quads[0][agree], err_msg=f"tissue level {index}"
        )
