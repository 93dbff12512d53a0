"""Patch galleries, tile explanations, tile confusion and the curation sections of the report,
on a real fleet: synthetic slides ingested on Ray, a real TorchScript model, post, views."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from engine.explain.sampling import sample_tiles
from engine.ingest import ingest
from engine.metrics.patch_confusion import non_homogeneous_tiles, percent_of_truth, tile_confusions
from engine.models import ModelCard
from engine.post import post
from engine.post.params import PostExecution, PostParams
from engine.qc.params import QcParams
from engine.qc.stage import qc
from engine.tables import read_table
from engine.views import render_views
from engine.views.gallery import GALLERY_TITLES
from engine.views.params import ViewParams
from tests.infer_models import register


class Purple(torch.nn.Module):
    """Two classes (other, purple): purple's logit is 8 x (blue - green), pooled by 4."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        purple = F.avg_pool2d(x[:, 2:3] - x[:, 1:2], 4) * 8.0
        return torch.cat([-purple, purple], dim=1)


def purple_card() -> ModelCard:
    return ModelCard.model_validate(
        {
            "name": "purple",
            "version": "1",
            "kind": "pixel_segmenter",
            "class_names": ["other", "purple"],
            "positive_class": "purple",
            "tile_size_px": 64,
            "mpp": 4.0,
            "overlap_px": 16,
            "output_stride": 4,
            "output_activation": "softmax",
            "normalisation": {"input_scale": "0-1"},
            "description": "Test model: softmax of 8 x (blue - green), no learned weights.",
            "training_data": "none: fixed arithmetic for tests",
        }
    )


# --------------------------------------------------------------------------------------------
# Pure parts


def test_sample_tiles_ranks_top_scored_and_worst_errors() -> None:
    scores = np.zeros((20, 30))
    scores[0:5, 10:15] = 0.9  # predicted, not annotated: a false positive tile
    scores[10:15, 0:5] = 0.6  # predicted, 60 % annotated
    tissue = np.ones_like(scores, bool)
    tissue[:, 28:] = False
    predicted = scores > 0.4
    truth = np.zeros_like(predicted)
    truth[10:15, 0:3] = True
    truth[15:20, 20:25] = True  # annotated, missed: the false negative tile
    chosen = sample_tiles(scores, tissue, 5, predicted=predicted, truth=truth, n=2)
    by_kind = {
        k: [(c.row, c.col) for c in chosen if c.kind == k]
        for k in ("top_scored", "false_positive", "false_negative")
    }
    assert by_kind == {
        "top_scored": [(0, 2), (2, 0)],
        "false_positive": [(0, 2), (2, 0)],
        "false_negative": [(3, 4)],
    }
    worst_fp = next(c for c in chosen if c.kind == "false_positive")
    assert worst_fp.fp_fraction == 1.0 and worst_fp.truth_fraction == 0.0
    # Without a threshold there are no error tiles, only the top-scored.
    assert {c.kind for c in sample_tiles(scores, tissue, 5, n=3)} == {"top_scored"}


def test_non_homogeneous_tiles_are_those_with_two_true_classes() -> None:
    truth = np.zeros((8, 8), np.int64)
    truth[:, 5:] = 1  # the class border runs through the second column of 4 x 4 tiles
    valid = np.ones_like(truth, bool)
    mask, n = non_homogeneous_tiles(truth, valid, 4)
    assert n == 2 and mask[:, 4:].all() and not mask[:, :4].any()
    pred = np.zeros_like(truth)  # predicts class 0 everywhere
    found = tile_confusions(pred, truth, valid, n_classes=2, block_px=4)
    all_cm, mixed_cm = found["all_tissue"][0], found["non_homogeneous"][0]
    assert all_cm.tolist() == [[40, 0], [24, 0]] and found["all_tissue"][1] == 4
    assert mixed_cm.tolist() == [[8, 0], [24, 0]]
    assert percent_of_truth(mixed_cm)[0].tolist() == [100.0, 0.0]


# --------------------------------------------------------------------------------------------
# End to end


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, ray_session) -> dict[str, Any]:
    from engine.infer import infer
    from engine.synth import generate_cohort

    work = tmp_path_factory.mktemp("gallery")
    manifest = generate_cohort(work / "cohort", 3, seed=5, width_px=1536, height_px=1024)
    root = work / "root"
    assert not ingest(manifest, root, progress=False).failures
    qc(root, params=QcParams(pixel_um=4.0), progress=False)
    model = register(root, Purple(), purple_card())
    assert not infer(root, model.ref, progress=False).failures
    posted = post(
        root,
        model.ref,
        progress=False,
        params=PostParams(score="probability", execution=PostExecution(scheduler="sync")),
    )
    assert not posted.failures
    views = render_views(root, model.ref, params=ViewParams(gallery_tiles=2, gallery_panel_px=96))
    assert not views.failures, views.failures
    return {"root": root, "model": model, "views": views}


def test_gallery_rows_are_the_six_panels_of_sampled_tiles(fleet: dict[str, Any]) -> None:
    views, model = fleet["views"], fleet["model"]
    rows = [
        r
        for r in read_table(fleet["root"] / "tables", "explanations").to_pylist()
        if r["model_id"] == model.model_id
    ]
    assert {r["slide_id"] for r in rows} == {s.slide_id for s in views.slides}
    slides = {
        r["slide_id"]: r
        for r in read_table(fleet["root"] / "tables", "slides").to_pylist()
        if r["model_id"] == model.model_id
    }
    for slide_id, slide in slides.items():  # error tiles exactly where post counts errors
        kinds = {r["kind"] for r in rows if r["slide_id"] == slide_id}
        assert "top_scored" in kinds
        assert ("false_positive" in kinds) == (slide["fp"] > 0), (slide_id, slide["fp"], kinds)
        assert ("false_negative" in kinds) == (slide["fn"] > 0), (slide_id, slide["fn"], kinds)
    assert {r["kind"] for r in rows} > {"top_scored"}
    for row in rows:
        assert (views.out_dir / row["explanation_file"]).is_file()
        assert row["method"] == "input_x_gradient" and "TorchScript" not in row["note"]
        assert row["seconds"] > 0 and row["size_um"] == pytest.approx(48 * 4.0)
    galleries = sorted(views.out_dir.glob("*_gallery.png"))
    assert len(galleries) == len(views.slides) and set(views.galleries) == set(galleries)
    slide_id = rows[0]["slide_id"]
    with Image.open(views.out_dir / f"{slide_id}_gallery.png") as image:
        width, height = image.size
    n_rows = sum(1 for r in rows if r["slide_id"] == slide_id)
    assert width >= len(GALLERY_TITLES) * 96 and height >= n_rows * 96


def test_explanations_point_at_what_raised_the_score(fleet: dict[str, Any]) -> None:
    """Purple rises with blue - green: input x gradient must follow blue - green in the tile."""
    from engine.explain.attribution import explain_tiles
    from engine.explain.loading import explainable_model
    from engine.infer.reading import model_frame, read_model_window
    from engine.store.slide_store import SlideStore

    root, model = fleet["root"], fleet["model"]
    row = next(
        r
        for r in read_table(root / "tables", "explanations").to_pylist()
        if r["model_id"] == model.model_id and r["kind"] == "top_scored" and r["rank"] == 1
    )
    slide = SlideStore.open(root / "slides" / f"{row['slide_id']}.ome.zarr")
    card = model.card
    x0, y0 = round(row["x_um"] / card.mpp) - 8, round(row["y_um"] / card.mpp) - 8
    frame = model_frame(slide, card.mpp, 0.03)
    tile = read_model_window(
        slide,
        slide.level(frame.source_level),
        (frame.level0_per_model_px_x, frame.level0_per_model_px_y),
        (x0, y0, 64, 64),
    )
    module, layer, note = explainable_model(model)
    maps = explain_tiles(
        module, card, tile[None], target_class=1, layer=layer, note=note, smooth_um=4.0
    )
    assert maps.scores[0] == pytest.approx(row["explained_score"], abs=1e-5)
    purple = tile[..., 2].astype(float) - tile[..., 1].astype(float)
    kept = slice(8, 56)
    r = np.corrcoef(maps.maps[0][kept, kept].ravel(), purple[kept, kept].ravel())[0, 1]
    assert r > 0.5, r


def test_tile_confusion_rows_for_the_multiclass_model(fleet: dict[str, Any]) -> None:
    root, model = fleet["root"], fleet["model"]
    rows = [
        r
        for r in read_table(root / "tables", "confusion").to_pylist()
        if r["model_id"] == model.model_id
    ]
    slides = {
        r["slide_id"]: r
        for r in read_table(root / "tables", "slides").to_pylist()
        if r["model_id"] == model.model_id
    }
    by = {(r["slide_id"], r["scope"]): r for r in rows}
    for slide_id, slide in slides.items():
        whole, mixed = by[(slide_id, "all_tissue")], by[(slide_id, "non_homogeneous")]
        assert whole["matrix"] == slide["confusion_matrix"]  # the same pixels as post's
        assert np.all(np.asarray(mixed["matrix"]) <= np.asarray(whole["matrix"]))
        assert mixed["tiles"] <= whole["tiles"]
    assert any(r["tiles"] > 0 for r in rows if r["scope"] == "non_homogeneous")


class _Sections(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.qc_rows: list[dict[str, str | None]] = []
        self.table: str | None = None
        self.gallery_images = 0
        self.section: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if tag == "section":
            self.section = a.get("id")
        if tag == "table":
            self.table = a.get("id")
        if tag == "tr" and self.table == "qc-table" and "data-slide" in a:
            self.qc_rows.append(a)
        if (
            tag == "img"
            and self.section == "galleries"
            and (a.get("src") or "").startswith("data:image/")
        ):
            self.gallery_images += 1


def test_report_shows_qc_strata_galleries_and_confusion_in_chromium(
    fleet: dict[str, Any], tmp_path: Path
) -> None:
    from tests.test_views import _chromium, _headless

    binary = _chromium()
    assert binary is not None, "no chromium binary on PATH (.ci/setup installs Debian's 'chromium')"
    report = fleet["views"].report
    dom = _Sections()
    dom.feed(
        _headless(
            binary,
            tmp_path / "profile",
            "--virtual-time-budget=3000",
            "--dump-dom",
            report.as_uri(),
        ).stdout
    )
    assert {
        "qc",
        "qc-table",
        "split-strata-table",
        "galleries",
        "explanation-table",
        "confusion-all_tissue",
        "confusion-non_homogeneous",
    } <= dom.ids
    qc_rows = read_table(fleet["root"] / "tables", "qc").to_pylist()
    assert sorted(r["data-slide"] for r in dom.qc_rows) == sorted(r["slide_id"] for r in qc_rows)
    assert dom.gallery_images >= 1
    html = report.read_text()
    assert "Non-homogeneous tiles only" in html and "% of that class" in html


def test_turning_galleries_off_keeps_the_tile_confusion(fleet: dict[str, Any]) -> None:
    """`view.gallery_tiles: 0` draws no gallery and explains nothing, but the multi-class
    confusion rows are still written (they are a metric, not a picture). Runs last: it redraws."""
    root, model = fleet["root"], fleet["model"]
    views = render_views(root, model.ref, params=ViewParams(gallery_tiles=0))
    assert not views.failures and views.galleries == []
    rows = [
        r
        for r in read_table(root / "tables", "confusion").to_pylist()
        if r["model_id"] == model.model_id and r["run_id"] == views.run_id
    ]
    assert {r["scope"] for r in rows} == {"all_tissue", "non_homogeneous"}
    assert len(rows) == 2 * len({r["slide_id"] for r in rows}) > 0
