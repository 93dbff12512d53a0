"""Annotation readers and the streaming rasteriser, on the real files in ../shared/annotations."""

from __future__ import annotations

import json
import logging
import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import shapely
from PIL import Image

from engine.annotations import (
    CLASS_MAP_PRESETS,
    HOLE,
    Annotation,
    AnnotationWarning,
    ClassMap,
    MaskAnnotation,
    PolygonAnnotation,
    class_map_preset,
    fill_even_odd,
    infer_mask_downsample,
    load_annotation,
    parse_asap_xml,
    pixel_centres,
)
from engine.annotations.rasterise import ring_edges
from engine.errors import BadAnnotation, ConfigError

ROOT = Path(__file__).resolve().parents[1]
SHARED = next(
    (
        p
        for p in (ROOT / "shared" / "annotations", ROOT.parent / "shared" / "annotations")
        if p.is_dir()
    ),
    None,
)
needs_shared = pytest.mark.usefixtures("shared_annotations")


@pytest.fixture
def shared_annotations() -> Path:
    """The real annotation files: a missing folder fails the tests that read it."""
    if SHARED is None:
        pytest.fail("../shared/annotations is missing: these tests read its real files")
    return SHARED


# CAMELYON16 slides are about 100k x 220k px; every shared polygon file fits this slide.
SLIDE_W, SLIDE_H = 100_000, 220_000
CAMELYON = class_map_preset("camelyon16")
ANY = class_map_preset("binary_any")

# What the README says each shared file is: area shapes, skipped non-areas, unsupported, mask.
AREAS, SKIPPED, UNSUPPORTED, MASK, EMPTY = "areas", "skipped", "unsupported", "mask", "empty"
EXPECTED = {
    "camelyon16-ncrf/Normal_017.json": EMPTY,  # only "negative" exclusions: all background
    "camelyon16-ncrf/Tumor_017.json": AREAS,
    "camelyon16-ncrf/Tumor_030.json": AREAS,
    "camelyon16-ncrf/Tumor_081.json": AREAS,
    "camelyon16-ncrf/Tumor_093.json": AREAS,
    "camelyon16-ncrf/Tumor_107.json": AREAS,
    "camelyon16-ncrf/asap/Tumor_017.xml": AREAS,
    "camelyon16-ncrf/asap/Tumor_081.xml": AREAS,
    "camelyon16-ncrf/asap/Tumor_107.xml": AREAS,
    "dlup/qupath05.geojson": AREAS,
    "large_image/sample.geojson": AREAS,
    "qupath/polygon.geojson": AREAS,
    "wsidicom/asap/asap-dot.xml": SKIPPED,
    "wsidicom/asap/asap-pointset.xml": SKIPPED,
    "wsidicom/asap/asap-polygon.xml": AREAS,
    "wsidicom/qupath_geojson/qupath-brush.json": AREAS,
    "wsidicom/qupath_geojson/qupath-ellipse.json": AREAS,
    "wsidicom/qupath_geojson/qupath-line.json": SKIPPED,
    "wsidicom/qupath_geojson/qupath-multipoint.json": SKIPPED,
    "wsidicom/qupath_geojson/qupath-point.json": SKIPPED,
    "wsidicom/qupath_geojson/qupath-polygon.json": AREAS,
    "wsidicom/qupath_geojson/qupath-polyline.json": SKIPPED,
    "wsidicom/qupath_geojson/qupath-rectangle.json": AREAS,
    "wsidicom/qupath_geojson/qupath-wand.json": AREAS,
    "wsidicom/qupath_geojson_advanced/qupath-polygon-cell-classified.json": AREAS,
    "histomicstk/TCGA-A2-A0YE_left-59206_top-33505_mag-BASE.png": MASK,
    **{
        f"histomicstk/polygon_merger_roi_masks/TCGA-A2-A0YE-01Z-00-DX1.8A2E3094-5755-42BC-969D-"
        f"7F0A2ECA0F39_left-44350_top-{top}_mag-BASE.png": MASK
        for top in (43750, 44262, 44774, 45286)
    },
    **{
        f"wsidicom/cytomine/cytomine-{kind}.txt": UNSUPPORTED
        for kind in (
            "circle",
            "freehand-line",
            "freehand-polygon",
            "line",
            "point",
            "polygon",
            "rectangle",
        )
    },
    "wsidicom/sectra/pathologycore-area.json": UNSUPPORTED,
    "wsidicom/sectra/pathologycore-polyline.json": UNSUPPORTED,
}


def shared(relative: str) -> Path:
    assert SHARED is not None
    return SHARED / relative


def gtcodes() -> ClassMap:
    return ClassMap.from_gtcodes_csv(shared("histomicstk/sample_GTcodes.csv"))


def whole(ann: Annotation, ds: int, width: int = SLIDE_W, height: int = SLIDE_H) -> np.ndarray:
    return ann.rasterise_block(0, 0, -(-width // ds), -(-height // ds), ds)


@pytest.fixture
def no_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# --- every shared file ---------------------------------------------------------------------


@needs_shared
def test_expectations_cover_every_shared_file() -> None:
    assert SHARED is not None
    present = {
        p.relative_to(SHARED).as_posix()
        for p in SHARED.rglob("*")
        if p.is_file() and p.suffix not in (".md", ".csv")
    }
    assert present == set(EXPECTED)


@needs_shared
@pytest.mark.parametrize(("relative", "expected"), sorted(EXPECTED.items()))
def test_shared_file_is_read_or_rejected(relative: str, expected: str) -> None:
    path = shared(relative)
    if expected == UNSUPPORTED:
        with pytest.raises(BadAnnotation, match="unsupported format"):
            load_annotation(path, ANY, slide_width_px=SLIDE_W, slide_height_px=SLIDE_H)
        return
    if expected == SKIPPED:
        with pytest.warns(AnnotationWarning, match="not areas"):
            ann = load_annotation(path, ANY, slide_width_px=SLIDE_W, slide_height_px=SLIDE_H)
        assert ann.is_empty
        assert not whole(ann, 256).any()
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        class_map = gtcodes() if expected == MASK else ANY
        ann = load_annotation(path, class_map, slide_width_px=SLIDE_W, slide_height_px=SLIDE_H)
    if expected == EMPTY:
        assert ann.is_empty
        assert ann.area_um2(0.25) == 0
        return
    assert ann.classes_present
    assert ann.area_um2(0.25) > 0


# --- CAMELYON16 areas ----------------------------------------------------------------------


def ncrf_reference(name: str) -> shapely.Geometry:
    """Tumour minus exclusions, built with shapely straight from the NCRF JSON."""
    data = json.loads(shared(f"camelyon16-ncrf/{name}.json").read_text())
    polys = {k: [shapely.Polygon(p["vertices"]) for p in data[k]] for k in ("positive", "negative")}
    return shapely.difference(
        shapely.union_all(polys["positive"]), shapely.union_all(polys["negative"])
    )


@needs_shared
@pytest.mark.parametrize(
    ("name", "ds", "rel_tol"),
    [
        ("Tumor_107", 64, 0.01),
        ("Tumor_081", 64, 0.01),
        ("Tumor_017", 16, 0.01),
        ("Tumor_081", 16, 0.01),
        ("Tumor_107", 16, 0.01),
    ],
)
def test_asap_tumour_area_matches_shapely(name: str, ds: int, rel_tol: float) -> None:
    ann = load_annotation(
        shared(f"camelyon16-ncrf/asap/{name}.xml"),
        CAMELYON,
        slide_width_px=SLIDE_W,
        slide_height_px=SLIDE_H,
    )
    reference = ncrf_reference(name).area
    labels = whole(ann, ds)
    assert labels.shape == (SLIDE_H // ds + (SLIDE_H % ds > 0), SLIDE_W // ds + (SLIDE_W % ds > 0))
    assert set(np.unique(labels)) <= {0, 1}
    assert np.count_nonzero(labels) * ds * ds == pytest.approx(reference, rel=rel_tol)
    assert ann.class_areas_px2()[1] == pytest.approx(reference, rel=1e-9)
    assert ann.area_um2(0.243) == pytest.approx(reference * 0.243**2, rel=1e-9)


@needs_shared
@pytest.mark.parametrize("name", ["Tumor_017", "Tumor_081", "Tumor_107"])
def test_asap_and_ncrf_rasterise_identically(name: str) -> None:
    kwargs = {"slide_width_px": SLIDE_W, "slide_height_px": SLIDE_H}
    xml = load_annotation(shared(f"camelyon16-ncrf/asap/{name}.xml"), CAMELYON, **kwargs)
    ncrf = load_annotation(shared(f"camelyon16-ncrf/{name}.json"), CAMELYON, **kwargs)
    np.testing.assert_array_equal(whole(xml, 32), whole(ncrf, 32))


# --- streaming: blocks stitch exactly ------------------------------------------------------


def stitched(
    ann: Annotation,
    x0: int,
    y0: int,
    width: int,
    height: int,
    ds: float,
    cuts_x: list[int],
    cuts_y: list[int],
) -> np.ndarray:
    """Rasterise a region as a grid of blocks cut at the given output-pixel offsets."""
    out = np.full((height, width), 255, dtype=np.uint8)
    xs, ys = [0, *cuts_x, width], [0, *cuts_y, height]
    for r0, r1 in zip(ys[:-1], ys[1:], strict=True):
        for c0, c1 in zip(xs[:-1], xs[1:], strict=True):
            bx, by = x0 + c0 * ds, y0 + r0 * ds
            assert bx == int(bx)
            assert by == int(by)
            out[r0:r1, c0:c1] = ann.rasterise_block(int(bx), int(by), c1 - c0, r1 - r0, ds)
    return out


def random_cuts(rng: np.random.Generator, size: int, step: int = 1) -> list[int]:
    count = int(rng.integers(1, 8))
    return sorted({int(c) * step for c in rng.integers(1, size // step, count)})


@needs_shared
@pytest.mark.parametrize("ds", [1, 4, 16, 2.5])
def test_blocks_stitch_to_one_shot_exactly(ds: float) -> None:
    ann = load_annotation(
        shared("camelyon16-ncrf/asap/Tumor_107.xml"),
        CAMELYON,
        slide_width_px=SLIDE_W,
        slide_height_px=SLIDE_H,
    )
    x0, y0 = 25_700, 59_000  # the annotated region, with tumour, exclusions and background
    width, height = int(4200 / ds), int(2900 / ds)
    if ds == 1:  # keep the level-0 case small: one corner with boundaries of both kinds
        x0, y0, width, height = 27_600, 59_050, 700, 500
    one_shot = ann.rasterise_block(x0, y0, width, height, ds)
    assert {0, 1} <= set(np.unique(one_shot))
    rng = np.random.default_rng(int(ds * 10))
    step = 2 if ds == 2.5 else 1  # block origins must be whole level-0 pixels
    for _ in range(4):
        cuts_x, cuts_y = random_cuts(rng, width, step), random_cuts(rng, height, step)
        np.testing.assert_array_equal(
            stitched(ann, x0, y0, width, height, ds, cuts_x, cuts_y), one_shot
        )
    tiles = list(range(64, width, 64)), list(range(64, height, 64))
    np.testing.assert_array_equal(stitched(ann, x0, y0, width, height, ds, *tiles), one_shot)


def test_blocks_stitch_when_edges_pass_through_pixel_centres() -> None:
    # Vertices on the centre grid of ds=4 (centres at 2, 6, 10, ...) and on its pixel edges.
    poly = shapely.Polygon([(2, 2), (30, 2), (30, 18), (18, 30), (2, 30), (10, 14)])
    hole = shapely.box(8, 8, 16, 16)
    ann = PolygonAnnotation({1: poly, 2: shapely.box(20, 0, 40, 8)}, hole)
    one_shot = ann.rasterise_block(0, 0, 12, 10, 4)
    for cut_x in range(1, 12):
        for cut_y in range(1, 10):
            np.testing.assert_array_equal(
                stitched(ann, 0, 0, 12, 10, 4, [cut_x], [cut_y]), one_shot
            )
    for single_x in range(12):
        np.testing.assert_array_equal(
            ann.rasterise_block(single_x * 4, 0, 1, 10, 4), one_shot[:, single_x : single_x + 1]
        )


def test_pixel_footprint_convention() -> None:
    # Pixel (i, j) covers [x0 + j*ds, x0 + (j+1)*ds): a 0..10 square at ds=4 has centres 2 and 6
    # inside; centre 10 lies on the right/bottom edge and is outside (half-open rule).
    ann = PolygonAnnotation({1: shapely.box(0, 0, 10, 10)})
    expected = np.zeros((4, 4), np.uint8)
    expected[:2, :2] = 1
    np.testing.assert_array_equal(ann.rasterise_block(0, 0, 4, 4, 4), expected)
    np.testing.assert_array_equal(ann.rasterise_block(-4, -4, 2, 2, 4), [[0, 0], [0, 1]])
    assert ann.rasterise_block(1000, 1000, 16, 8, 4).shape == (8, 16)
    assert ann.rasterise_block(0, 0, 0, 5, 4).shape == (5, 0)


def test_fill_matches_shapely_away_from_boundaries() -> None:
    rng = np.random.default_rng(7)
    cx, cy = pixel_centres(-5, 45, 3), pixel_centres(-7, 44, 3)
    grid_x, grid_y = np.meshgrid(cx, cy)
    for _ in range(50):
        union = shapely.union_all(
            [
                shapely.make_valid(shapely.Polygon(rng.uniform(0, 120, (9, 2)).round(1)))
                for _ in range(3)
            ]
        )
        parts = [p for p in shapely.get_parts(union) if p.geom_type == "Polygon"]
        ours = fill_even_odd(ring_edges(parts), cx, cy)
        reference = shapely.contains_xy(union, grid_x, grid_y)
        differ = ours != reference
        if differ.any():  # only centres lying on a boundary may go either way
            points = shapely.points(grid_x[differ], grid_y[differ])
            assert shapely.distance(union.boundary, points).max() < 1e-9


@needs_shared
def test_annotation_survives_pickling() -> None:
    # Ray ships objects between processes by pickling them.
    ann = load_annotation(
        shared("camelyon16-ncrf/asap/Tumor_107.xml"),
        CAMELYON,
        slide_width_px=SLIDE_W,
        slide_height_px=SLIDE_H,
    )
    copy = pickle.loads(pickle.dumps(ann))
    np.testing.assert_array_equal(
        copy.rasterise_block(25_600, 59_000, 300, 200, 16),
        ann.rasterise_block(25_600, 59_000, 300, 200, 16),
    )


def test_block_touching_nothing_is_background() -> None:
    ann = PolygonAnnotation({1: shapely.box(1000, 1000, 2000, 2000)})
    assert not ann.rasterise_block(50_000, 50_000, 512, 512, 8).any()
    assert ann._indexes[1].fill(pixel_centres(50_000, 4, 8), pixel_centres(50_000, 4, 8)) is None


# --- holes and fill order ------------------------------------------------------------------


@needs_shared
@pytest.mark.parametrize("name", ["asap/Tumor_107.xml", "Tumor_107.json"])
def test_camelyon_exclusions_are_background(name: str) -> None:
    ann = load_annotation(
        shared(f"camelyon16-ncrf/{name}"), CAMELYON, slide_width_px=SLIDE_W, slide_height_px=SLIDE_H
    )
    data = json.loads(shared("camelyon16-ncrf/Tumor_107.json").read_text())
    positive = shapely.union_all([shapely.Polygon(p["vertices"]) for p in data["positive"]])
    negative = shapely.union_all([shapely.Polygon(p["vertices"]) for p in data["negative"]])
    ds, x0, y0 = 8, 25_600, 59_000
    labels = ann.rasterise_block(x0, y0, 560, 360, ds)
    grid_x, grid_y = np.meshgrid(pixel_centres(x0, 560, ds), pixel_centres(y0, 360, ds))
    in_negative = shapely.contains_xy(negative, grid_x, grid_y)
    in_positive = shapely.contains_xy(positive, grid_x, grid_y)
    assert (in_negative & in_positive).sum() > 1000  # the exclusions do cut into the tumour
    assert not labels[in_negative].any()
    assert (labels[in_positive & ~in_negative] == 1).mean() > 0.99


def feature(geometry: dict, classification: object = None, name: str = "x") -> dict:
    properties: dict = {"name": name}
    if classification is not None:
        properties["classification"] = classification
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def write_json(tmp_path: Path, obj: object, name: str = "a.geojson") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


def test_geojson_interiors_are_background(tmp_path: Path, no_warnings: None) -> None:
    outer = [[0, 0], [400, 0], [400, 400], [0, 400], [0, 0]]
    inner = [[100, 100], [300, 100], [300, 300], [100, 300], [100, 100]]
    path = write_json(
        tmp_path, feature({"type": "Polygon", "coordinates": [outer, inner]}, {"name": "Tumor"})
    )
    ann = load_annotation(path, CAMELYON, slide_width_px=1000, slide_height_px=1000)
    labels = ann.rasterise_block(0, 0, 100, 100, 10)
    assert labels[20, 20] == 0
    assert labels[5, 5] == 1
    assert labels[50, 50] == 0
    assert np.count_nonzero(labels) * 100 == pytest.approx(400**2 - 200**2)
    assert ann.class_areas_px2() == {1: pytest.approx(400**2 - 200**2)}


def test_higher_label_wins_then_holes(tmp_path: Path) -> None:
    class_map = ClassMap(name="three", classes={"Stroma": 1, "Tumor": 2, "Ignore*": HOLE})
    features = [
        feature(
            {"type": "Polygon", "coordinates": [[[0, 0], [60, 0], [60, 60], [0, 60], [0, 0]]]},
            {"name": "Tumor"},
        ),
        feature(
            {"type": "Polygon", "coordinates": [[[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]]]},
            {"name": "Stroma"},
        ),
        feature(
            {"type": "Polygon", "coordinates": [[[0, 0], [20, 0], [20, 20], [0, 20], [0, 0]]]},
            {"name": "Ignore*"},
        ),
    ]
    path = write_json(tmp_path, {"type": "FeatureCollection", "features": features})
    ann = load_annotation(path, class_map, slide_width_px=100, slide_height_px=100)
    labels = ann.rasterise_block(0, 0, 10, 10, 10)
    assert labels[0, 0] == 0
    assert labels[3, 3] == 2
    assert labels[8, 8] == 1
    assert ann.class_areas_px2() == {
        1: pytest.approx(100**2 - 60**2),
        2: pytest.approx(60**2 - 20**2),
    }
    assert ann.classes_present == (1, 2)


# --- QuPath specifics ----------------------------------------------------------------------


@needs_shared
def test_qupath_cells_are_not_tumour_unless_asked() -> None:
    path = shared("wsidicom/qupath_geojson_advanced/qupath-polygon-cell-classified.json")
    tumour_only = ClassMap(name="tumour", classes={"Tumor": 1})
    with pytest.warns(AnnotationWarning, match=r"'Cell' \(2\).*'Nucleus' \(2\)"):
        ann = load_annotation(path, tumour_only, slide_width_px=SLIDE_W, slide_height_px=SLIDE_H)
    assert ann.is_empty
    assert ann.classes_present == ()
    assert not ann.rasterise_block(17_000, 19_700, 200, 200, 2).any()

    cells = ClassMap(name="cells", classes={"Cell": 1, "Nucleus": 2})
    ann = load_annotation(path, cells, slide_width_px=SLIDE_W, slide_height_px=SLIDE_H)
    assert ann.classes_present == (1, 2)
    labels = ann.rasterise_block(17_100, 19_800, 70, 140, 2)
    assert set(np.unique(labels)) == {0, 1, 2}


def test_qupath_json_variants(tmp_path: Path, no_warnings: None) -> None:
    square = {"type": "Polygon", "coordinates": [[[0, 0], [50, 0], [50, 50], [0, 50], [0, 0]]]}
    moved = {"type": "Polygon", "coordinates": [[[50, 50], [90, 50], [90, 90], [50, 90], [50, 50]]]}
    class_map = ClassMap(name="tumour", classes={"Tumor": 1})
    variants = {
        "list.json": [feature(square, {"name": "Tumor: Positive"}), feature(moved, "Tumor")],
        "collection.geojson": {
            "type": "FeatureCollection",
            "features": [
                feature(square, {"names": ["Tumor", "Positive"]}),
                feature({"type": "GeometryCollection", "geometries": [moved]}, {"name": "tumor"}),
            ],
        },
        "multi.json": feature(
            {"type": "MultiPolygon", "coordinates": [square["coordinates"], moved["coordinates"]]},
            {"name": "Tumor"},
        ),
    }
    for name, obj in variants.items():
        ann = load_annotation(
            write_json(tmp_path, obj, name), class_map, slide_width_px=100, slide_height_px=100
        )
        assert ann.class_areas_px2() == {1: pytest.approx(50**2 + 40**2)}, name


def test_self_intersecting_polygon_is_repaired(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bow_tie = {"type": "Polygon", "coordinates": [[[0, 0], [100, 100], [100, 0], [0, 100], [0, 0]]]}
    path = write_json(tmp_path, feature(bow_tie))
    with caplog.at_level(logging.WARNING, logger="engine.annotations"):
        ann = load_annotation(path, ANY, slide_width_px=200, slide_height_px=200)
    assert "repaired 1" in caplog.text
    assert ann.class_areas_px2() == {1: pytest.approx(5000)}
    assert np.count_nonzero(ann.rasterise_block(0, 0, 100, 100, 1)) == pytest.approx(5000, rel=0.03)


# --- ASAP specifics ------------------------------------------------------------------------


def asap(*annotations: str, groups: str = "") -> bytes:
    return (
        '<?xml version="1.0"?><ASAP_Annotations><Annotations>'
        + "".join(annotations)
        + f"</Annotations><AnnotationGroups>{groups}</AnnotationGroups></ASAP_Annotations>"
    ).encode()


def asap_polygon(group: str, points: list[tuple[str, str]], kind: str = "Polygon") -> str:
    coords = "".join(
        f'<Coordinate Order="{i}" X="{x}" Y="{y}"/>' for i, (x, y) in enumerate(points)
    )
    return f'<Annotation Name="a" Type="{kind}" PartOfGroup="{group}"><Coordinates>{coords}</Coordinates></Annotation>'


def test_asap_parsing_details() -> None:
    square = [("0", "0"), ("10,5", "0"), ("10,5", "10"), ("0", "10")]  # locale decimal commas
    parsed = parse_asap_xml(
        asap(
            asap_polygon("metastasis", square, kind="Spline"),
            asap_polygon("_2", square, kind="Rectangle"),
            asap_polygon("Tumor", [("1", "1")], kind="Dot"),
            groups='<Group Name="metastasis" PartOfGroup="Tumor"/>',
        )
    )
    assert [s.classes for s in parsed.shapes] == [("metastasis", "Tumor"), ("_2",)]
    assert parsed.shapes[0].geometry.area == pytest.approx(105)
    assert parsed.skipped == {"Dot": 1}
    assert CAMELYON.target_for_names(parsed.shapes[0].classes) == 1


def test_empty_asap_file_is_all_background(tmp_path: Path, no_warnings: None) -> None:
    path = tmp_path / "empty.xml"
    path.write_bytes(asap())
    ann = load_annotation(path, CAMELYON, slide_width_px=1000, slide_height_px=1000)
    assert ann.is_empty
    assert ann.area_um2(0.5) == 0
    assert not ann.rasterise_block(0, 0, 10, 10, 100).any()


# --- errors --------------------------------------------------------------------------------


@needs_shared
def test_annotation_of_another_slide_is_rejected() -> None:
    with pytest.raises(BadAnnotation, match=r"does not fit the slide.*entirely outside"):
        load_annotation(
            shared("camelyon16-ncrf/asap/Tumor_107.xml"),
            CAMELYON,
            slide_width_px=20_000,
            slide_height_px=50_000,
        )
    with pytest.raises(BadAnnotation, match="more than 1% beyond"):
        load_annotation(
            shared("camelyon16-ncrf/Tumor_093.json"),
            CAMELYON,
            slide_width_px=78_000,
            slide_height_px=SLIDE_H,
        )


def test_small_overhang_is_tolerated_and_clipped(tmp_path: Path) -> None:
    path = write_json(
        tmp_path,
        feature(
            {
                "type": "Polygon",
                "coordinates": [[[-5, -5], [1005, -5], [1005, 1005], [-5, 1005], [-5, -5]]],
            }
        ),
    )
    ann = load_annotation(path, ANY, slide_width_px=1000, slide_height_px=1000)
    assert ann.rasterise_block(0, 0, 10, 10, 100).all()
    assert ann.class_areas_px2() == {1: pytest.approx(1000 * 1000)}  # cut to the slide
    path = write_json(
        tmp_path,
        feature(
            {"type": "Polygon", "coordinates": [[[0, 0], [1020, 0], [1020, 10], [0, 10], [0, 0]]]}
        ),
    )
    with pytest.raises(BadAnnotation, match="beyond its edge"):
        load_annotation(path, ANY, slide_width_px=1000, slide_height_px=1000)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        (
            "truncated.xml",
            b'<?xml version="1.0"?><ASAP_Annotations><Annotations><Annot',
            "malformed XML",
        ),
        ("other.xml", b"<svg><path/></svg>", "not <ASAP_Annotations>"),
        ("bomb.xml", b'<!DOCTYPE x [<!ENTITY a "aaaa">]><ASAP_Annotations/>', "entities"),
        (
            "nan.xml",
            asap(asap_polygon("Tumor", [("0", "0"), ("abc", "0"), ("1", "1")])),
            "not a number",
        ),
        ("truncated.geojson", b'{"type": "FeatureCollection", "features": [', "malformed JSON"),
        ("garbage.json", b"\x00\x01binary", "malformed JSON"),
        (
            "coords.geojson",
            json.dumps(feature({"type": "Polygon", "coordinates": [[["a", 1]]]})).encode(),
            "malformed Polygon",
        ),
        (
            "geometry.geojson",
            json.dumps(feature({"type": "Circle", "radius": 3})).encode(),
            "invalid GeoJSON geometry",
        ),
        (
            "ncrf.json",
            b'{"positive": [{"name": "a", "vertices": [[0, 0], [1]]}]}',
            "not \\[x, y\\] number pairs",
        ),
        ("other.json", b'{"slides": []}', "unsupported format"),
        ("empty.xml", b"", "empty \\(0 bytes\\)"),
        ("mystery.bin", b"\x00\x01\x02\x03", "unsupported format"),
        ("mask.png", b"\x89PNG\r\n\x1a\nnot really", "cannot read label mask"),
    ],
)
def test_malformed_files_raise_bad_annotation(
    tmp_path: Path, name: str, content: bytes, match: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BadAnnotation, match=match) as info:
        load_annotation(path, CAMELYON, slide_width_px=1000, slide_height_px=1000)
    assert name in str(info.value)


def test_missing_file_raises_bad_annotation(tmp_path: Path) -> None:
    with pytest.raises(BadAnnotation, match="not found"):
        load_annotation(tmp_path / "nope.xml", CAMELYON, slide_width_px=10, slide_height_px=10)


def test_block_arguments_are_checked() -> None:
    ann = PolygonAnnotation({1: shapely.box(0, 0, 10, 10)})
    with pytest.raises(ValueError, match="downsample"):
        ann.rasterise_block(0, 0, 4, 4, 0)
    with pytest.raises(ValueError, match="block size"):
        ann.rasterise_block(0, 0, -1, 4, 1)
    with pytest.raises(ValueError, match="1..255"):
        PolygonAnnotation({256: shapely.box(0, 0, 1, 1)})


# --- label masks ---------------------------------------------------------------------------


def test_label_mask_round_trips(tmp_path: Path, no_warnings: None) -> None:
    rng = np.random.default_rng(3)
    mask = rng.choice(np.array([0, 1, 2, 3, 7], dtype=np.uint8), size=(50, 80))
    path = tmp_path / "slide_mask.png"
    Image.fromarray(mask).save(path)
    class_map = ClassMap(name="m", values={1: 1, 2: 0, 3: 2, 7: HOLE})
    # A slide whose size is not a multiple of the mask's: the mask was rounded up.
    ann = load_annotation(path, class_map, slide_width_px=80 * 16 - 7, slide_height_px=50 * 16 - 3)
    assert isinstance(ann, MaskAnnotation)
    assert ann.downsample_x == ann.downsample_y == 16
    expected = np.choose(np.searchsorted([0, 1, 2, 3, 7], mask), [0, 1, 0, 2, 0]).astype(np.uint8)
    np.testing.assert_array_equal(ann.rasterise_block(0, 0, 80, 50, 16), expected)
    np.testing.assert_array_equal(
        ann.rasterise_block(0, 0, 160, 100, 8), expected.repeat(2, 0).repeat(2, 1)
    )
    stitched_blocks = stitched(ann, 0, 0, 160, 100, 8, [13, 77, 100], [1, 64])
    np.testing.assert_array_equal(stitched_blocks, expected.repeat(2, 0).repeat(2, 1))
    assert ann.class_areas_px2() == {
        1: pytest.approx(np.sum(expected == 1) * 256),
        2: pytest.approx(np.sum(expected == 2) * 256),
    }


def test_panda_mask_in_tiff_red_channel(tmp_path: Path) -> None:
    import tifffile

    values = np.arange(6, dtype=np.uint8).repeat(4).reshape(4, 6)
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = values
    path = tmp_path / "panda_mask.tiff"
    tifffile.imwrite(path, rgb, photometric="rgb")
    ann = load_annotation(
        path, CLASS_MAP_PRESETS["panda_radboud"], slide_width_px=24, slide_height_px=16
    )
    np.testing.assert_array_equal(
        ann.rasterise_block(0, 0, 6, 4, 4), (values >= 3).astype(np.uint8)
    )
    with pytest.warns(AnnotationWarning, match=r"mask values \[3, 4, 5\]"):
        karolinska = load_annotation(
            path, CLASS_MAP_PRESETS["panda_karolinska"], slide_width_px=24, slide_height_px=16
        )
    np.testing.assert_array_equal(
        karolinska.rasterise_block(0, 0, 6, 4, 4), (values == 2).astype(np.uint8)
    )


@needs_shared
def test_histomicstk_region_mask_with_gtcodes() -> None:
    path = shared("histomicstk/TCGA-A2-A0YE_left-59206_top-33505_mag-BASE.png")
    raw = np.asarray(Image.open(path))
    class_map = gtcodes()
    assert class_map.values[1] == 1
    assert class_map.values[7] == HOLE
    assert class_map.values[254] == 0
    ann = load_annotation(path, class_map, slide_width_px=SLIDE_W, slide_height_px=SLIDE_H)
    region = ann.rasterise_block(59_206, 33_505, raw.shape[1], raw.shape[0], 1)
    np.testing.assert_array_equal(region, np.where(raw == 7, 0, raw))
    assert not ann.rasterise_block(0, 0, 100, 60, 512).any()  # left of the region
    tumour_only = ClassMap.from_gtcodes_csv(
        shared("histomicstk/sample_GTcodes.csv"), merge={"mostly_tumor": 1}
    )
    ann = load_annotation(path, tumour_only, slide_width_px=SLIDE_W, slide_height_px=SLIDE_H)
    assert ann.classes_present == (1,)
    assert ann.class_areas_px2()[1] == np.sum(raw == 1)


def test_mask_that_does_not_fit_the_slide_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    Image.fromarray(np.ones((100, 100), np.uint8)).save(path)
    with pytest.raises(BadAnnotation, match="aspect ratio"):
        load_annotation(path, ANY, slide_width_px=3200, slide_height_px=6400)
    with pytest.raises(BadAnnotation, match="larger than the slide"):
        load_annotation(path, ANY, slide_width_px=50, slide_height_px=50)
    assert infer_mask_downsample(100, 100, slide_width_px=3150, slide_height_px=3170) == (32, 32)
    assert infer_mask_downsample(100, 100, slide_width_px=250, slide_height_px=250) == (2.5, 2.5)


def test_colour_image_is_not_a_label_mask(tmp_path: Path) -> None:
    path = tmp_path / "overlay.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(
        path
    )
    with pytest.raises(BadAnnotation, match="colour image"):
        load_annotation(path, ANY, slide_width_px=10, slide_height_px=10)


# --- class maps ----------------------------------------------------------------------------


def test_class_map_presets_and_validation() -> None:
    assert {"camelyon16", "binary_any", "panda_radboud", "panda_karolinska"} <= set(
        CLASS_MAP_PRESETS
    )
    assert CAMELYON.target_for_names(["_0"]) == 1
    assert CAMELYON.target_for_names(["TUMOR"]) == 1
    assert CAMELYON.target_for_names(["_2"]) == HOLE
    assert CAMELYON.target_for_names(["Cell"]) is None
    assert ANY.target_for_names(["anything"]) == 1
    assert ANY.target_for_value(9) == 1
    assert ANY.target_for_value(0) == 0
    with pytest.raises(ConfigError, match="unknown class map preset"):
        class_map_preset("nope")
    with pytest.raises(ValueError, match="less than or equal to 255"):
        ClassMap(name="bad", classes={"x": 256})
    with pytest.raises(ValueError, match="listed twice"):
        ClassMap(name="bad", classes={"Tumor": 1, "tumor": 2})
    assert ClassMap.model_validate_json(CAMELYON.model_dump_json()) == CAMELYON
    assert "classes" in ClassMap.model_json_schema()["properties"]


@needs_shared
def test_gtcodes_merge_rejects_unknown_groups() -> None:
    with pytest.raises(ConfigError, match="not in"):
        ClassMap.from_gtcodes_csv(shared("histomicstk/sample_GTcodes.csv"), merge={"tumour": 1})
