"""Views: level choice, physical resampling, colour, panels, QuPath GeoJSON, the cohort report.

The end-to-end tests run the real pipeline on the synthetic cohort (ingest -> infer with the
Darkness model -> post -> views) and check what a person would look at: transparent heatmaps
read from a coarse level, three-panel figures, GeoJSON that QuPath and SlideFleet's own
annotation reader accept with the same area, and a report that Chromium renders and sorts.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
import uuid
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from PIL import Image

from engine.annotations import ClassMap, class_map_preset, load_annotation
from engine.errors import ConfigError
from engine.infer import infer
from engine.ingest import ingest
from engine.post.cohort import post
from engine.post.params import PostExecution, PostParams
from engine.store import ngff
from engine.store.frame import Frame, resample_nearest
from engine.store.slide_store import SlideStore
from engine.tables import read_table
from engine.views import (
    RegionRule,
    ReportInputs,
    ViewParams,
    build_report_html,
    class_map,
    class_map_rgba,
    colourise,
    display_range,
    display_values,
    feature_collection,
    level_for_scale,
    level_for_size,
    predicted_mask,
    region_feature,
    render_views,
    smooth_nan,
)
from engine.views.panels import GAP_PX, compose_panels
from engine.views.render import alpha_by_value
from engine.views.report import best_and_worst
from tests.infer_models import Darkness, darkness_card, register
from tests.views_fixtures import write_multiclass_prediction

SLIDES = ["synth_000", "synth_001", "synth_002", "synth_003"]
MISSING = "synth_missing"


# --------------------------------------------------------------------------------------------
# Pure: levels and grids


def _level(path: str, height: int, width: int, scale_um: float) -> Frame:
    t = scale_um / 2 - 0.25  # pixel-0 centre of a level over a 0.5 µm/px level 0
    return Frame(scale_um, scale_um, t, t, height, width, path)


PYRAMID = [
    _level("0", 2048, 3072, 0.5),
    _level("1", 1024, 1536, 1.0),
    _level("2", 512, 768, 2.0),
    _level("3", 256, 384, 4.0),
]


@pytest.mark.parametrize(
    ("max_side", "expected"),
    [(1024, "2"), (768, "2"), (767, "3"), (1536, "1"), (4000, "0"), (100, "3")],
)
def test_level_for_size_is_the_finest_level_that_fits(max_side: int, expected: str) -> None:
    assert level_for_size(PYRAMID, max_side).path == expected
    assert level_for_size(list(reversed(PYRAMID)), max_side).path == expected


def test_level_for_scale_is_the_coarsest_level_not_coarser_than_asked() -> None:
    assert level_for_scale(PYRAMID, 2.0).path == "2"
    assert level_for_scale(PYRAMID, 3.0).path == "2"
    assert level_for_scale(PYRAMID, 0.1).path == "0"
    assert level_for_scale(PYRAMID, 100).path == "3"


def test_resample_nearest_maps_grids_through_physical_space() -> None:
    # 8 µm score grid (pixel-0 centre at 3.75 µm) onto a 3 µm grid that is no power of two of it.
    source_grid = Frame(8.0, 8.0, 3.75, 3.75, 5, 6)
    source = np.arange(30, dtype=np.int32).reshape(5, 6)
    target_grid = Frame(3.0, 3.0, 1.25, 1.25, 16, 20)
    out = resample_nearest(source, source_grid, target_grid, fill=-1)
    for r in range(16):
        for c in range(20):
            y, x = 1.25 + 3.0 * r, 1.25 + 3.0 * c
            i, j = math.floor((y - 3.75) / 8 + 0.5), math.floor((x - 3.75) / 8 + 0.5)
            expected = source[i, j] if 0 <= i < 5 and 0 <= j < 6 else -1
            assert out[r, c] == expected
    # (C, H, W) and NaN fill of an integer source
    stacked = resample_nearest(
        np.stack([source, source]),
        source_grid,
        Frame(8, 8, 3.75 + 8 * 5, 3.75, 2, 2),
        fill=np.nan,
    )
    assert stacked.shape == (2, 2, 2)
    assert np.isnan(stacked).all()


def test_level0_placement_follows_the_ngff_convention() -> None:
    level = ngff.level_scale("0", 0.5, 0.5, 16, 16)
    grid = Frame(
        level.scale_y_um, level.scale_x_um, level.translation_y_um, level.translation_x_um, 10, 10
    )
    assert grid.level0_placement(0.5, 0.5) == pytest.approx(
        {
            "origin_x_level0_px": 0.0,
            "origin_y_level0_px": 0.0,
            "level0_px_per_pixel_x": 16.0,
            "level0_px_per_pixel_y": 16.0,
        }
    )


# --------------------------------------------------------------------------------------------
# Pure: colour


def test_colourise_is_transparent_off_tissue_and_where_unscored() -> None:
    values = np.array([[0.0, 0.5, 1.0], [np.nan, 2.0, -1.0]])
    valid = np.array([[True, True, False], [True, True, True]])
    rgba = colourise(values, 0.0, 1.0, "viridis", valid=valid)
    assert rgba.dtype == np.uint8
    assert rgba.shape == (2, 3, 4)
    assert rgba[..., 3].tolist() == [[255, 255, 0], [0, 255, 255]]
    assert (rgba[0, 2] == 0).all()
    assert (rgba[1, 0] == 0).all()
    np.testing.assert_array_equal(
        rgba[1, 1, :3], colourise(np.array([[1.0]]), 0, 1)[0, 0, :3]
    )  # clipped high
    np.testing.assert_array_equal(rgba[1, 2, :3], rgba[0, 0, :3])  # clipped low
    faded = alpha_by_value(rgba, values, 0.0, 1.0)
    assert faded[0, 0, 3] == 0
    assert faded[0, 1, 3] == 128
    assert faded[1, 1, 3] == 255


def test_display_values_zscore_and_nan_aware_smoothing() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((40, 50)).astype(np.float32)
    tissue = np.zeros((40, 50), bool)
    tissue[5:35, 5:45] = True
    scores[10, 10] = np.nan
    z = display_values(scores, tissue, zscore=True)
    on = tissue & np.isfinite(scores)
    assert np.isnan(z[~on]).all()
    assert z[on].mean() == pytest.approx(0, abs=1e-5)
    assert z[on].std() == pytest.approx(1, rel=1e-4)
    smooth = display_values(scores, tissue, smooth_sigma_px=2.0)
    assert np.isnan(smooth[~on]).all()
    assert smooth[on].std() < scores[on].std() / 2
    constant = np.where(tissue, 0.3, np.nan)
    np.testing.assert_allclose(smooth_nan(constant, 3.0)[tissue], 0.3, rtol=1e-6)


def test_display_range_precedence() -> None:
    values = np.linspace(0, 10, 101)
    assert display_range(values) == (0.0, 1.0)
    assert display_range(values, zscore=True) == (-3.0, 3.0)
    assert display_range(values, clip_percentiles=(5, 95)) == pytest.approx((0.5, 9.5))
    assert display_range(values, clip_percentiles=(5, 95), value_range=(2, 4)) == (2.0, 4.0)
    low, high = display_range(np.full(10, 0.7), clip_percentiles=(5, 95))
    assert low < 0.7 < high


def test_class_map_takes_the_most_likely_class_and_leaves_unscored_transparent() -> None:
    p = np.zeros((3, 2, 3), np.float32)
    p[0, 0, 0] = p[1, 0, 1] = p[2, 0, 2] = 1.0
    p[:, 1, 0] = np.nan
    valid = np.array([[True, True, True], [True, True, False]])
    labels = class_map(p, valid)
    assert labels.tolist() == [[0, 1, 2], [-1, 0, -1]]
    rgba = class_map_rgba(labels, [(255, 0, 0), (0, 255, 0), (0, 0, 255)])
    assert rgba[0, 1].tolist() == [0, 255, 0, 255]
    assert rgba[1, 0, 3] == 0


def test_panels_are_side_by_side_at_full_size() -> None:
    panel = np.zeros((50, 80, 3), np.uint8)
    figure = compose_panels([panel, panel, panel], ["a", "b", "c"])
    assert figure.shape[1] == 3 * 80 + 2 * GAP_PX
    assert figure.shape[0] > 50
    with pytest.raises(ValueError, match="one shape"):
        compose_panels([panel, panel[:10]], ["a", "b"])


def test_view_params_are_validated() -> None:
    with pytest.raises(ValueError, match="clip_percentiles"):
        ViewParams(clip_percentiles=(95, 5))
    with pytest.raises(ValueError, match="unknown colormap"):
        ViewParams(colormap="no-such-map")
    assert ViewParams(clip_percentiles=(5, 95)).clip_percentiles == (5, 95)


# --------------------------------------------------------------------------------------------
# Pure: GeoJSON and report HTML


def test_region_feature_is_what_qupath_reads() -> None:
    square = shapely.Polygon(
        [(0, 0), (0, 10), (10, 10), (10, 0)], [[(2, 2), (4, 2), (4, 4), (2, 4)]]
    )
    feature = region_feature(
        square,
        class_name="Tumor",
        colour=(0, 230, 255),
        measurements={"Region area µm^2": 25.0, "Mean score": None, "Max score": float("nan")},
        feature_id=str(uuid.uuid4()),
        metadata={"slidefleet_region_id": "1"},
    )
    collection = feature_collection([feature])
    text = json.dumps(collection, allow_nan=False)
    back = json.loads(text)["features"][0]
    assert back["geometry"]["type"] == "Polygon"
    assert len(back["geometry"]["coordinates"]) == 2
    exterior = back["geometry"]["coordinates"][0]
    assert exterior[0] == exterior[-1]
    assert shapely.Polygon(exterior).exterior.is_ccw  # counter-clockwise in (x, y)
    props = back["properties"]
    assert props["objectType"] == "annotation"
    assert props["classification"] == {"name": "Tumor", "color": [0, 230, 255]}
    assert props["measurements"] == {"Region area µm^2": 25.0}
    assert shapely.geometry.shape(back["geometry"]).area == pytest.approx(96.0)


def test_best_and_worst_are_disjoint_and_skip_undefined() -> None:
    rows = [{"slide_id": f"s{i}", "iou": v} for i, v in enumerate([0.9, None, 0.1, 0.5, 0.7])]
    assert best_and_worst(rows, 2) == (["s0", "s4"], ["s2", "s3"])
    assert best_and_worst(rows[:3], 3) == (["s0"], ["s2"])
    assert best_and_worst(rows, 0) == ([], [])


def test_report_html_escapes_and_shows_undefined_as_a_dash() -> None:
    html = build_report_html(
        ReportInputs(
            model_ref="m:<1>",
            model_id="abc",
            generated_at="now",
            slides=[
                {
                    "slide_id": "<script>x</script>",
                    "iou": None,
                    "has_ground_truth": True,
                    "tp": 0,
                    "fp": 0,
                    "fn": 0,
                    "tn": 10,
                    "burden_stratum": "none",
                    "case": "both_empty",
                }
            ],
            failures=[
                {
                    "stage": "ingest",
                    "slide_id": "s&1",
                    "error_type": "SlideNotFound",
                    "message": "a < b",
                }
            ],
        )
    )
    assert "<script>x</script>" not in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html
    assert "m:&lt;1&gt;" in html
    assert "s&amp;1" in html
    assert "a &lt; b" in html
    assert 'data-value=""' in html
    assert "—" in html


# --------------------------------------------------------------------------------------------
# End to end on the synthetic cohort


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, synth_cohort: Path, ray_session
) -> dict[str, Any]:
    """ingest (4 slides + one whose file is missing) -> infer (Darkness) -> post -> views."""
    work = tmp_path_factory.mktemp("views")
    with synth_cohort.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for column in ("path", "annotation", "annotation_xml"):
            if row.get(column):
                row[column] = str((synth_cohort.parent / row[column]).resolve())
    rows.append(
        {
            **rows[0],
            "slide_id": MISSING,
            "path": str(work / "no-such-slide.tif"),
            "annotation": "",
            "annotation_xml": "",
        }
    )
    manifest = work / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    root = work / "root"
    ingested = ingest(manifest, root, progress=False)
    assert [f.slide_id for f in ingested.failures] == [MISSING]
    model = register(root, Darkness(), darkness_card("darkness"))
    assert not infer(root, model.ref, progress=False).failures
    post_params = PostParams(score="zscore", execution=PostExecution(scheduler="sync"))
    posted = post(root, model.ref, params=post_params, progress=False)
    assert posted.threshold is not None
    assert not posted.failures
    views = render_views(root, model.ref, slide_ids=[*SLIDES, MISSING])
    return {
        "root": root,
        "model": model,
        "post": posted,
        "views": views,
        "post_slides": {r["slide_id"]: r for r in posted.tables["slides"].to_pylist()},
    }


def test_views_are_written_for_every_scored_slide(fleet: dict[str, Any]) -> None:
    views = fleet["views"]
    out = fleet["root"] / "views" / fleet["model"].model_id
    assert views.out_dir == out
    assert sorted(s.slide_id for s in views.slides) == SLIDES
    for slide_id in SLIDES:
        for name in (f"{slide_id}_heatmap.png", f"{slide_id}_panel.png", f"{slide_id}.geojson"):
            assert (out / name).is_file(), name
    assert (out / "report.html").is_file()
    assert views.report == out / "report.html"
    # The slide without a store is a views failure, recorded in the failures table.
    assert [(f.stage, f.slide_id, f.error_type) for f in views.failures] == [
        ("views", MISSING, "StoreIncomplete")
    ]
    failures = read_table(fleet["root"] / "tables", "failures").to_pylist()
    assert {(f["stage"], f["slide_id"]) for f in failures} >= {
        ("ingest", MISSING),
        ("views", MISSING),
    }


def test_heatmap_is_read_from_a_coarse_level_and_transparent_off_tissue(
    fleet: dict[str, Any],
) -> None:
    root = fleet["root"]
    for views in fleet["views"].slides:
        store = SlideStore.open(root / "slides" / f"{views.slide_id}.ome.zarr")
        # 3072 x 2048 slide, max side 1024: level 2 (768 x 512), never level 0.
        assert views.thumbnail_level == "2" == level_for_size(store.levels, 1024).path
        level = next(lv for lv in store.levels if lv.path == "2")
        with Image.open(views.heatmap) as image:
            assert image.mode == "RGBA"
            assert image.size == (level.width_px, level.height_px)
            assert image.info["slidefleet:slide_level"] == "2"
            rgba = np.asarray(image)
        tissue_level = level_for_scale(store.label_levels("tissue"), level.scale_x_um)
        tissue = (
            resample_nearest(
                np.asarray(store.label("tissue", tissue_level)[:]),
                tissue_level,
                level,
                fill=0,
            )
            > 0
        )
        assert (rgba[..., 3][~tissue] == 0).all(), "glass must be transparent"
        assert (rgba[..., 3][tissue] == 255).mean() > 0.9, "scored tissue is opaque"
        assert rgba[..., 3].min() == 0
        assert (~tissue).mean() > 0.2


def test_panel_is_three_panels_wide(fleet: dict[str, Any]) -> None:
    for views in fleet["views"].slides:
        with Image.open(views.heatmap) as heatmap, Image.open(views.panel) as panel:
            assert panel.width == 3 * heatmap.width + 2 * GAP_PX
            assert panel.width == pytest.approx(3 * heatmap.width, rel=0.02)
            assert panel.height > heatmap.height
            # The middle panel shows the heatmap pixel for pixel (composited on white).
            rgb = np.asarray(panel.convert("RGB"))
            heat = np.asarray(heatmap)
            x0, x1 = heatmap.width + GAP_PX, 2 * heatmap.width + GAP_PX
            top = next(
                y for y in range(rgb.shape[0]) if (rgb[y, x0:x1] == 170).all()
            )  # the panel's frame
            middle = rgb[top + 1 : top + heat.shape[0] - 1, x0 + 1 : x1 - 1]
            inner = heat[1:-1, 1:-1]
            opaque = inner[..., 3] == 255
            assert (middle[opaque] == inner[opaque][:, :3]).all(axis=1).mean() > 0.95


def _geojson(fleet: dict[str, Any], slide_id: str) -> dict[str, Any]:
    path = fleet["root"] / "views" / fleet["model"].model_id / f"{slide_id}.geojson"
    return json.loads(path.read_text())


def test_geojson_is_a_qupath_feature_collection_of_post_regions(fleet: dict[str, Any]) -> None:
    regions = read_table(fleet["root"] / "tables", "regions").to_pylist()
    for views in fleet["views"].slides:
        collection = _geojson(fleet, views.slide_id)
        assert collection["type"] == "FeatureCollection"
        row = fleet["post_slides"][views.slide_id]
        assert len(collection["features"]) == row["n_regions"] == views.n_regions
        assert views.predicted_px == row["tumour_px"]
        slide_regions = sorted(
            (r for r in regions if r["slide_id"] == views.slide_id), key=lambda r: r["region_id"]
        )
        store = SlideStore.open(fleet["root"] / "slides" / f"{views.slide_id}.ome.zarr")
        for feature, region in zip(collection["features"], slide_regions, strict=True):
            assert feature["type"] == "Feature"
            assert uuid.UUID(feature["id"])
            geometry = feature["geometry"]
            assert geometry["type"] == "Polygon"
            ring = geometry["coordinates"][0]
            assert ring[0] == ring[-1]
            assert len(ring) >= 4
            xs, ys = [p[0] for p in ring], [p[1] for p in ring]
            assert min(xs) >= 0
            assert max(xs) <= store.width_px
            assert min(ys) >= 0
            assert max(ys) <= store.height_px
            props = feature["properties"]
            assert props["objectType"] == "annotation"
            assert props["classification"]["name"] == "Tumor"
            assert len(props["classification"]["color"]) == 3
            measurements = props["measurements"]
            assert measurements["Region area µm^2"] == pytest.approx(region["area_um2"])
            assert measurements["Mean score"] == pytest.approx(region["mean_score"])
            # The outline encloses the region's centroid and lies within its bounding box.
            polygon = shapely.geometry.shape(geometry)
            minx, miny, maxx, maxy = polygon.bounds
            assert region["bbox_x0_level0_px"] <= minx
            assert maxx <= region["bbox_x1_level0_px"]
            assert region["bbox_y0_level0_px"] <= miny
            assert maxy <= region["bbox_y1_level0_px"]
    assert sum(len(_geojson(fleet, s)["features"]) for s in SLIDES) > 0


@pytest.mark.parametrize(
    "class_map", [class_map_preset("binary_any"), ClassMap(name="tumor", classes={"Tumor": 1})]
)
def test_geojson_round_trips_through_the_annotation_reader(
    fleet: dict[str, Any], class_map: ClassMap
) -> None:
    post_params = fleet["post"].params
    for views in fleet["views"].slides:
        if not views.n_regions:
            continue
        store = SlideStore.open(fleet["root"] / "slides" / f"{views.slide_id}.ome.zarr")
        path = fleet["root"] / "views" / fleet["model"].model_id / f"{views.slide_id}.geojson"
        annotation = load_annotation(
            path, class_map, slide_width_px=store.width_px, slide_height_px=store.height_px
        )
        row = fleet["post_slides"][views.slide_id]
        polygons_um2 = (
            sum(
                shapely.geometry.shape(f["geometry"]).area
                for f in _geojson(fleet, views.slide_id)["features"]
            )
            * store.mpp**2
        )
        assert annotation.area_um2(store.mpp) == pytest.approx(polygons_um2, rel=1e-6)
        # Outlines run along pixel edges and cut corners: within a few % of post's pixel area.
        assert annotation.area_um2(store.mpp) == pytest.approx(row["tumour_mm2"] * 1e6, rel=0.06)
        # Rasterised back on the score grid, the annotation is post's cleaned mask.
        ds = row["pixel_um"] / store.mpp
        scores = fleet["root"] / "predictions" / fleet["model"].model_id / f"{views.slide_id}.zarr"
        import zarr

        array = zarr.open_array(scores / "0", mode="r")
        height, width = array.shape[1:]
        back = annotation.rasterise_block(0, 0, width, height, ds) > 0
        tissue_level = level_for_scale(store.label_levels("tissue"), row["pixel_um"])
        grid = Frame(
            row["pixel_um"],
            row["pixel_um"],
            row["pixel_um"] / 2 - store.mpp / 2,
            row["pixel_um"] / 2 - store.mpp / 2,
            height,
            width,
        )
        tissue = (
            resample_nearest(np.asarray(store.label("tissue", tissue_level)[:]), tissue_level, grid)
            > 0
        )
        rule = RegionRule(
            row["threshold"],
            row["score_kind"],
            post_params.min_region_um2,
            post_params.max_hole_um2,
        )
        mask = predicted_mask(np.asarray(array[0]), tissue, rule, pixel_um=row["pixel_um"])
        assert mask.sum() == row["tumour_px"]
        assert (back != mask).sum() <= max(2, 0.02 * mask.sum())


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _headless(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)


class _Dom(HTMLParser):
    """Rows of the slide and failure tables, and body attributes, from a dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.table: str | None = None
        self.rows: dict[str, list[dict[str, str | None]]] = {"slide-table": [], "failure-table": []}
        self.body: dict[str, str | None] = {}
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self.table = a.get("id")
        elif tag == "tr" and self.table in self.rows and "data-slide" in a:
            self.rows[self.table].append(a)
        elif tag == "body":
            self.body = a
        elif tag == "img":
            self.images.append(a.get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.table = None


CLICK_IOU = """<script>
var th = document.querySelector('#slide-table th[data-key="iou"]');
function order() { return Array.prototype.map.call(document.querySelectorAll('#slide-table tbody tr'),
                                                   function (r) { return r.getAttribute('data-slide'); }).join(','); }
th.click(); document.body.setAttribute('data-asc', order()); document.body.setAttribute('data-asc-sort', th.getAttribute('aria-sort'));
th.click(); document.body.setAttribute('data-desc', order()); document.body.setAttribute('data-desc-sort', th.getAttribute('aria-sort'));
</script></body>"""


def test_report_is_self_contained(fleet: dict[str, Any]) -> None:
    html = fleet["views"].report.read_text()
    outside_images = re.sub(r'"data:image/[a-z]+;base64,[A-Za-z0-9+/=]*"', '""', html)
    assert not re.search(r"https?:|ftp:|wss?:|//[a-z0-9]", outside_images, re.IGNORECASE), (
        "no network address"
    )
    assert "<link" not in html
    assert "@import" not in html
    assert "url(" not in html
    sources = re.findall(r'\ssrc="([^"]*)"', html)
    assert sources
    assert all(s.startswith("data:image/") for s in sources)
    out = fleet["views"].out_dir
    for href in re.findall(r'\shref="([^"]*)"', html):
        assert href.startswith("#") or (out / href).is_file(), href
    assert "Content-Security-Policy" in html


def test_report_renders_in_chromium_with_sorting_and_failures(
    fleet: dict[str, Any], tmp_path: Path
) -> None:
    binary = _chromium()
    assert binary is not None, (
        "no chromium binary on PATH: .ci/setup installs Debian's 'chromium' package (as root); "
        "install it to render the report"
    )
    report = fleet["views"].report
    probe = report.parent / "report-sort-probe.html"  # beside the report, so its links resolve
    probe.write_text(report.read_text().replace("</body>", CLICK_IOU, 1))
    try:
        dom = _Dom()
        dom.feed(
            _headless(
                binary,
                tmp_path / "profile",
                "--virtual-time-budget=3000",
                "--dump-dom",
                probe.as_uri(),
            ).stdout
        )
    finally:
        probe.unlink()

    slides = fleet["post_slides"]
    assert len(dom.rows["slide-table"]) == len(slides) == 4
    defined = sorted(
        (r["iou"], s)
        for s, r in slides.items()
        if r["iou"] is not None and not math.isnan(r["iou"])
    )
    undefined = [s for s, r in slides.items() if r["iou"] is None or math.isnan(r["iou"])]
    assert undefined == ["synth_001"]  # no tumour, nothing predicted: IoU undefined
    assert dom.body["data-asc"] == ",".join([s for _, s in defined] + undefined)
    assert dom.body["data-desc"] == ",".join([s for _, s in reversed(defined)] + undefined)
    assert (dom.body["data-asc-sort"], dom.body["data-desc-sort"]) == ("ascending", "descending")
    failed = {(r["data-stage"], r["data-slide"]) for r in dom.rows["failure-table"]}
    assert failed == {("ingest", MISSING), ("views", MISSING)}
    assert len(dom.images) >= 3
    assert all(src.startswith("data:image/") for src in dom.images)

    shot = tmp_path / "report.png"
    _headless(
        binary,
        tmp_path / "profile",
        "--hide-scrollbars",
        "--window-size=1400,3000",
        f"--screenshot={shot}",
        report.as_uri(),
    )
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 20, "the page rendered content, not a blank screen"


def test_prediction_store_lines_up_with_the_slide_in_ome_zarr(fleet: dict[str, Any]) -> None:
    """Read both stores with ome-zarr-py only: the score map must sit on the tissue it scored."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    def image_node(path: Path) -> Any:
        return next(iter(Reader(parse_url(str(path)))()))

    root, model_id = fleet["root"], fleet["model"].model_id
    slide = image_node(root / "slides" / "synth_000.ome.zarr")
    scores = image_node(root / "predictions" / model_id / "synth_000.zarr")
    assert [a["name"] for a in scores.metadata["axes"]] == ["c", "y", "x"]
    assert {a.get("unit") for a in scores.metadata["axes"][1:]} == {"micrometer"}

    def transform(node: Any, level: int) -> tuple[np.ndarray, np.ndarray]:
        t = {d["type"]: d for d in node.metadata["coordinateTransformations"][level]}
        return np.asarray(t["scale"]["scale"][1:]), np.asarray(t["translation"]["translation"][1:])

    slide_scale, slide_offset = transform(slide, 0)
    score_scale, score_offset = transform(scores, 0)
    stride = score_scale / slide_scale
    np.testing.assert_allclose(stride, [16, 16])  # 2 µm model px x output stride 4 over 0.5 µm
    # The centre of score pixel 0 is the centre of its 16 x 16 level-0 footprint.
    np.testing.assert_allclose(score_offset, slide_offset + slide_scale * (stride - 1) / 2)

    # Content: the score at each pixel is the darkness of the slide pixels under it (in µm).
    rgb = np.asarray(slide.data[0]).astype(np.float32) / 255
    darkness = 1 - rgb.mean(axis=0)
    values = np.asarray(scores.data[0])[0]
    s = int(stride[0])
    h, w = (
        min(values.shape[0], darkness.shape[0] // s),
        min(values.shape[1], darkness.shape[1] // s),
    )
    pooled = darkness[: h * s, : w * s].reshape(h, s, w, s).mean(axis=(1, 3))
    scored = np.isfinite(values[:h, :w])
    aligned = np.corrcoef(values[:h, :w][scored], pooled[scored])[0, 1]
    both = scored[:, :-1] & np.isfinite(values[:h, 1:w])
    shifted = np.corrcoef(values[:h, 1:w][both], pooled[:, : w - 1][both])[0, 1]
    assert aligned > 0.97
    assert shifted < aligned


def test_multiclass_prediction_gets_a_class_map_with_a_legend(fleet: dict[str, Any]) -> None:
    root = fleet["root"]
    model_id = "bands00000000000"
    write_multiclass_prediction(root, model_id, "synth_002", ("stroma", "tumour", "necrosis"))
    result = render_views(root, model_id, params=ViewParams(max_side_px=400, channel="tumour"))
    assert not result.failures
    (views,) = result.slides
    assert views.thumbnail_level == "3"
    assert views.classes is not None
    assert views.geojson is None
    with Image.open(views.classes) as image, Image.open(views.heatmap) as heatmap:
        figure = np.asarray(image.convert("RGB"))
        assert image.width == heatmap.width
        assert image.height > heatmap.height + 20
    # The legend swatches carry the three class colours.
    from engine.views.render import class_palette

    legend = figure[heatmap.height + 20 :]
    for colour in class_palette(3):
        assert (legend == colour).all(axis=-1).sum() > 20, colour
    html = result.report.read_text()
    assert "post has not run for this model" in html


def test_unknown_channel_is_a_config_error() -> None:
    from engine.views.slide import channel_of

    assert channel_of(None, ("stroma", "tumour")) == (1, "tumour")
    with pytest.raises(ConfigError, match="not in the prediction"):
        channel_of("mitosis", ("stroma", "tumour"))


def test_cli_draws_views(fleet: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main

    argv = ["views", "--model", "darkness", "--root", str(fleet["root"]), "--slides", "synth_003"]
    assert main(argv) == 0
    assert "report.html" in capsys.readouterr().out


def test_region_outlines_keep_holes_and_post_outer_rings() -> None:
    from engine.post.compute import label_regions, region_polygons
    from engine.views.regions import region_outlines

    mask = np.zeros((20, 24), bool)
    mask[2:15, 3:18] = True
    mask[5:9, 6:10] = False  # a hole
    mask[6:8, 7:9] = True  # an island inside the hole: a region of its own
    mask[17:19, 20:22] = True
    mask[16, 19] = True  # joined diagonally to the square above (8-connected)
    labels, n = label_regions(mask)
    placement = {
        "origin_x_level0_px": 100.0,
        "origin_y_level0_px": 50.0,
        "level0_px_per_pixel_x": 16.0,
        "level0_px_per_pixel_y": 16.0,
    }
    outlines = region_outlines(labels, **placement)
    outer = region_polygons(mask, pixel_um=8.0, labels=labels, **placement)
    assert sorted(outlines) == sorted(outer) == list(range(1, n + 1))
    for region_id, polygon in outlines.items():
        assert polygon.is_valid
        assert shapely.Polygon(polygon.exterior).equals(outer[region_id])
        pixel_area = (labels == region_id).sum() * 16.0 * 16.0
        assert polygon.area == pytest.approx(pixel_area, rel=0.15)  # corners cut: 1/8 px each
    with_hole = outlines[labels[2, 3]]
    assert len(with_hole.interiors) == 1
    # The hole ring encloses the island too (the island is its own feature): 4 x 4 px.
    assert shapely.Polygon(with_hole.interiors[0]).area == pytest.approx(16 * 256, rel=0.1)


def test_zscore_smoothing_and_clipping_options(fleet: dict[str, Any], tmp_path: Path) -> None:
    from engine.views import SlideSettings, render_slide

    root = fleet["root"]
    params = ViewParams(
        zscore=True, smooth_sigma_um=16.0, clip_percentiles=(5, 95), max_side_px=800
    )
    settings = SlideSettings(fleet["model"].model_id, params, tmp_path)
    views = render_slide(
        root / "slides" / "synth_000.ome.zarr",
        root / "predictions" / fleet["model"].model_id / "synth_000.zarr",
        settings,
        None,
    )
    assert views.thumbnail_level == "2"  # 768 px fits 800
    assert views.geojson is None  # no threshold given: no regions
    low, high = views.display_range
    assert -3 < low < 0 < high < 4  # 5th / 95th percentiles of z-scores
    with Image.open(views.heatmap) as image:
        rgba = np.asarray(image)
    opaque = rgba[..., 3] == 255
    assert opaque.mean() > 0.3
    assert (rgba[..., 3][~opaque] == 0).all()
    # Percentile clipping uses the whole colormap: both ends appear on the slide.
    from engine.views.render import colormap_lut

    lut = colormap_lut("viridis")
    colours = rgba[opaque][:, :3]
    assert (colours == lut[0]).all(axis=1).mean() > 0.01
    assert (colours == lut[-1]).all(axis=1).mean() > 0.01


def test_report_adds_multiclass_columns_when_post_has_them() -> None:
    html = build_report_html(
        ReportInputs(
            model_ref="m:1",
            model_id="abc",
            generated_at="now",
            slides=[{"slide_id": "a", "iou": 0.5, "miou": 0.4, "macro_dice": 0.55}],
        )
    )
    assert 'data-key="miou"' in html
    assert 'data-value="0.4"' in html
    plain = build_report_html(
        ReportInputs(
            model_ref="m:1",
            model_id="abc",
            generated_at="now",
            slides=[{"slide_id": "a", "iou": 0.5}],
        )
    )
    assert 'data-key="miou"' not in plain


def test_views_export_post_outlines_as_written_and_they_rasterise_back_to_post_mask(
    fleet: dict[str, Any],
) -> None:
    """Post writes each region's outline once; the GeoJSON is exactly it, and it is the mask post measured."""
    from engine.views.inputs import PredictionStore
    from engine.views.regions import SlideRegions

    regions = read_table(fleet["root"] / "tables", "regions").to_pylist()
    checked = 0
    for views in fleet["views"].slides:
        rows = sorted(
            (r for r in regions if r["slide_id"] == views.slide_id), key=lambda r: r["region_id"]
        )
        if not rows:
            continue
        store = SlideStore.open(fleet["root"] / "slides" / f"{views.slide_id}.ome.zarr")
        prediction = PredictionStore.open(
            fleet["root"] / "predictions" / fleet["model"].model_id / f"{views.slide_id}.zarr"
        )
        grid = min(prediction.levels, key=lambda lv: lv.scale_x_um * lv.scale_y_um)
        features = _geojson(fleet, views.slide_id)["features"]
        for feature, row in zip(features, rows, strict=True):
            written = shapely.from_wkb(row["outline_wkb"])
            assert shapely.geometry.shape(feature["geometry"]).equals(written)
            one = SlideRegions.from_rows([row], pixel_um=grid.pixel_um)
            mask = one.mask_on(
                grid,
                mpp_x=store.mpp_x,
                mpp_y=store.mpp_y,
                level0_translation_x_um=store.levels[0].translation_x_um,
                level0_translation_y_um=store.levels[0].translation_y_um,
            )
            assert int(mask.sum()) == row["area_px"], (views.slide_id, row["region_id"])
            checked += 1
    assert checked > 0


def test_per_slide_rows_carry_one_slides_rows_and_the_runs_record() -> None:
    from engine.views.inputs import PostResults

    post = PostResults(
        "h",
        [{"slide_id": "a", "threshold": 0.5}, {"slide_id": "b", "threshold": 0.5}],
        record={"params": {"score": "probability"}},
        regions=[{"slide_id": "b", "region_id": 1}, {"slide_id": "a", "region_id": 1}]
        + [{"slide_id": "b", "region_id": 2}],
    )
    split = post.per_slide(["b", "a", "gone"])
    assert split["b"].slides == [post.slides[1]] and split["b"].params == post.params
    assert [r["region_id"] for r in split["b"].regions_of("b")] == [1, 2]
    assert split["a"].regions == [{"slide_id": "a", "region_id": 1}]
    assert split["gone"].slide("gone") is None and split["gone"].record == post.record
