"""One slide's patch gallery and tile explanations (and, multi-class, its tile confusion counts).

Tiles are sampled on the score map's finest level (:mod:`engine.explain.sampling`): the top-scored
tiles and the worst false-positive and false-negative tiles against post's threshold and
morphology. Each is read from the slide store at the model's resolution with its context, as
infer read it, and explained (:func:`engine.explain.attribution.explain_tiles`). A gallery row is
image | predicted mask | overlay | ground truth | heatmap | explanation of the tile's kept region.

Writes ``<slide_id>_gallery.png`` and ``explain/<slide_id>_<kind>_<rank>.png`` beside the views
and returns rows for ``tables/explanations`` and ``tables/confusion``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from engine.explain.attribution import explain_tiles
from engine.explain.sampling import TileChoice, sample_tiles
from engine.infer.reading import model_frame, read_model_window, recorded_mpp_tolerance
from engine.metrics.patch_confusion import tile_confusions
from engine.models.card import ModelCard
from engine.store.atomic import atomic_write_bytes
from engine.store.slide_store import SlideStore
from engine.views import panels as fig
from engine.views import render
from engine.views.inputs import PredictionStore
from engine.views.regions import RegionRule, predicted_mask
from engine.views.slide import SlideSettings, _png_bytes, channel_of, label_on

EXPLAIN_DIR = "explain"
GALLERY_TITLES = ("Image", "Predicted mask", "Overlay", "Ground truth", "Heatmap", "Explanation")
KIND_LABEL = {
    "top_scored": "Top-scored",
    "false_positive": "Worst false positive",
    "false_negative": "Worst false negative",
}


@dataclass(frozen=True)
class ExplainModel:
    """A model ready to explain: the module, the Grad-CAM layer if any, and why this method."""

    card: ModelCard
    module: torch.nn.Module
    layer: torch.nn.Module | None
    note: str


@dataclass
class SlideGallery:
    slide_id: str
    gallery: Path | None
    explanation_rows: list[dict[str, Any]] = field(default_factory=list)
    confusion_rows: list[dict[str, Any]] = field(default_factory=list)
    explain_seconds: float = 0.0


@dataclass(frozen=True)
class TileGrid:
    """Where model tiles sit: kept region ``step_px`` model px, ``block_px`` output px per side."""

    tile_px: int
    step_px: int
    crop_px: int
    block_px: int

    @classmethod
    def of(cls, card: ModelCard) -> TileGrid:
        step = card.tile_size_px - card.overlap_px
        stride = card.output_stride if card.output_stride < step else step
        return cls(card.tile_size_px, step, card.overlap_px // 2, max(1, step // stride))


def _resize(image: NDArray[Any], size: int, *, nearest: bool) -> NDArray[Any]:
    """``image`` (H, W[, C]) resized to ``size`` x ``size``."""
    if image.dtype == bool:
        return _resize(image.astype(np.uint8) * 255, size, nearest=True) > 127
    mode = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    if image.dtype != np.uint8:  # float maps: resize each as a float image
        return np.asarray(Image.fromarray(image.astype(np.float32), "F").resize((size, size), mode))
    return np.asarray(Image.fromarray(image).resize((size, size), mode))


def _block(array: NDArray[Any], choice: TileChoice, block_px: int, fill: Any) -> NDArray[Any]:
    """The tile's block of an output-grid array, padded with ``fill`` at the slide's edge."""
    y0, x0 = choice.row * block_px, choice.col * block_px
    out = np.full((block_px, block_px), fill, dtype=array.dtype)
    part = array[y0 : y0 + block_px, x0 : x0 + block_px]
    out[: part.shape[0], : part.shape[1]] = part
    return out


def _row(
    image: NDArray[np.uint8],
    predicted: NDArray[np.bool_] | None,
    truth: NDArray[np.bool_] | None,
    tissue: NDArray[np.bool_],
    scores: NDArray[np.float32],
    explanation: NDArray[np.float32],
    low: float,
    high: float,
    colormap: str,
) -> list[NDArray[np.uint8]]:
    """The six panels of one tile, all ``image``'s size."""
    line = max(1, image.shape[0] // 96)
    mask_panel = np.full_like(image, 255)
    mask_panel[tissue] = (225, 225, 225)
    if predicted is not None:
        mask_panel[predicted] = render.PREDICTED_RGB
    overlay = render.composite(
        image, render.colourise(scores, low, high, colormap, valid=tissue), 0.45
    )
    if truth is not None:
        overlay = render.draw_outline(overlay, truth, render.TRUTH_RGB, line)
    if predicted is not None:
        overlay = render.draw_outline(overlay, predicted, render.PREDICTED_RGB, line)
    truth_panel = (
        render.draw_outline(
            render.tint(image, truth, render.TRUTH_RGB, 0.35), truth, render.TRUTH_RGB, line
        )
        if truth is not None
        else render.greyed(image)
    )
    heat = render.composite(
        np.full_like(image, 255), render.colourise(scores, low, high, colormap, valid=tissue)
    )
    explained = render.composite(
        render.greyed(image, 0.5), render.colourise(explanation, 0.0, 1.0, "inferno"), 0.7
    )
    return [fig.framed(p) for p in (image, mask_panel, overlay, truth_panel, heat, explained)]


def _caption(choice: TileChoice, x_um: float, y_um: float) -> str:
    def pct(value: float | None) -> str:
        return "—" if value is None else f"{100 * value:.0f} %"

    what = {
        "top_scored": f"score {choice.mean_score:.3f}",
        "false_positive": f"FP {pct(choice.fp_fraction)}",
        "false_negative": f"FN {pct(choice.fn_fraction)}",
    }[choice.kind]
    return (
        f"{KIND_LABEL[choice.kind]} #{choice.rank} · ({x_um:.0f}, {y_um:.0f}) µm · {what} · "
        f"predicted {pct(choice.predicted_fraction)} · annotated {pct(choice.truth_fraction)}"
    )


def _multiclass_truth(
    labels: NDArray[np.integer], n_classes: int, label_values: Any
) -> NDArray[np.int64]:
    """Annotation labels as class indices (post's ``class_label_values``); -1 where no class."""
    values = tuple(label_values) if label_values else tuple(range(n_classes))
    lut = np.full(int(max(int(labels.max(initial=0)), max(values))) + 1, -1, dtype=np.int64)
    for index, value in enumerate(values[:n_classes]):
        lut[value] = index
    return lut[labels.astype(np.int64)]


def render_gallery(
    slide_path: Path,
    prediction_path: Path,
    model: ExplainModel,
    settings: SlideSettings,
    rule: RegionRule | None,
    *,
    post_params: dict[str, Any] | None = None,
    split: str | None = None,
) -> SlideGallery:
    """Sample, explain and draw one slide's tiles; also its tile confusion counts (multi-class)."""
    params = settings.params
    card = model.card
    slide = SlideStore.open(slide_path)
    prediction = PredictionStore.open(prediction_path)
    slide_id = slide.slide_id
    tiles = TileGrid.of(card)
    finest = min(prediction.levels, key=lambda lv: lv.scale_x_um * lv.scale_y_um)
    grid = finest
    index, class_name = channel_of(settings.region_channel, prediction.class_names)
    scores = prediction.channel(finest, index)
    tissue = label_on(slide, "tissue", grid) > 0
    labels = label_on(slide, "annotation", grid) if "annotation" in slide.label_names else None
    truth = None
    if labels is not None:
        truth = (
            labels != 0 if settings.truth_labels is None else np.isin(labels, settings.truth_labels)
        )
    predicted = (
        predicted_mask(scores, tissue, rule, pixel_um=grid.pixel_um) if rule is not None else None
    )
    result = SlideGallery(slide_id, None)

    n_classes = len(prediction.class_names)
    if labels is not None and n_classes > 1 and card.kind != "anomaly_scorer":
        probabilities = prediction.all_channels(finest)
        finite = np.all(np.isfinite(probabilities), axis=0)
        pred = np.argmax(np.where(np.isfinite(probabilities), probabilities, -np.inf), axis=0)
        classes = _multiclass_truth(
            labels, n_classes, (post_params or {}).get("class_label_values")
        )
        valid = tissue & finite & (classes >= 0)
        for scope, (matrix, n_tiles) in tile_confusions(
            pred, np.maximum(classes, 0), valid, n_classes=n_classes, block_px=tiles.block_px
        ).items():
            result.confusion_rows.append(
                {
                    "slide_id": slide_id,
                    "model_id": settings.model_id,
                    "split": split,
                    "scope": scope,
                    "class_names": list(prediction.class_names),
                    "matrix": matrix.tolist(),
                    "tiles": n_tiles,
                }
            )

    if params.gallery_tiles <= 0:
        return result
    choices = sample_tiles(
        scores,
        tissue,
        tiles.block_px,
        predicted=predicted,
        truth=truth if predicted is not None else None,
        n=params.gallery_tiles,
    )
    if not choices:
        return result
    # Read as infer read them: the same model frame (mpp tolerance from the prediction's parameters).
    frame = model_frame(slide, card.mpp, recorded_mpp_tolerance(prediction.attributes))
    level = slide.level(frame.source_level)
    f = (frame.level0_per_model_px_x, frame.level0_per_model_px_y)
    inputs = np.stack(
        [
            read_model_window(
                slide,
                level,
                f,
                (
                    c.col * tiles.step_px - tiles.crop_px,
                    c.row * tiles.step_px - tiles.crop_px,
                    tiles.tile_px,
                    tiles.tile_px,
                ),
            )
            for c in choices
        ]
    )
    started = time.perf_counter()
    explained = explain_tiles(
        model.module,
        card,
        inputs,
        target_class=index,
        layer=model.layer,
        note=model.note,
        smooth_um=params.explain_smooth_um,
    )
    result.explain_seconds = time.perf_counter() - started
    per_tile = result.explain_seconds / len(choices)

    low, high = (0.0, 1.0) if params.value_range is None else params.value_range
    size = params.gallery_panel_px
    explain_dir = settings.out_dir / EXPLAIN_DIR
    explain_dir.mkdir(parents=True, exist_ok=True)
    gallery_name = f"{slide_id}_gallery.png"
    rows: list[NDArray[np.uint8]] = []
    kept = slice(tiles.crop_px, tiles.crop_px + tiles.step_px)
    for number, choice in enumerate(choices):
        image = _resize(np.ascontiguousarray(inputs[number][kept, kept]), size, nearest=False)
        attribution = explained.maps[number][kept, kept]
        peak = float(attribution.max())
        attribution = attribution / peak if peak > 0 else attribution
        panels = _row(
            image,
            None
            if predicted is None
            else _resize(_block(predicted, choice, tiles.block_px, False), size, nearest=True),
            None
            if truth is None
            else _resize(_block(truth, choice, tiles.block_px, False), size, nearest=True),
            _resize(_block(tissue, choice, tiles.block_px, False), size, nearest=True),
            _resize(_block(scores, choice, tiles.block_px, np.float32(np.nan)), size, nearest=True),
            _resize(attribution.astype(np.float32), size, nearest=False),
            low,
            high,
            params.colormap,
        )
        # Top-left of the tile's kept region, µm from the slide's top-left edge.
        x_um = choice.col * tiles.step_px * f[0] * slide.mpp_x
        y_um = choice.row * tiles.step_px * f[1] * slide.mpp_y
        body = fig.compose_panels(panels, list(GALLERY_TITLES))
        text = _caption(choice, x_um, y_um)
        font_px = fig.font_size_for(body.shape[1])
        while font_px > 9 and fig._text_width(text, font_px) > body.shape[1]:  # fit the row
            font_px -= 1
        caption = fig.text_band(body.shape[1], [(0, text)], font_px)
        rows.append(np.concatenate([caption, body], axis=0))
        name = f"{slide_id}_{choice.kind}_{choice.rank}.png"
        atomic_write_bytes(
            explain_dir / name,
            _png_bytes(
                panels[-1],
                {
                    "slidefleet:slide_id": slide_id,
                    "slidefleet:model_id": settings.model_id,
                    "slidefleet:method": explained.method,
                    "slidefleet:kind": choice.kind,
                    "slidefleet:x_um": f"{x_um:g}",
                    "slidefleet:y_um": f"{y_um:g}",
                },
            ),
        )
        result.explanation_rows.append(
            {
                "slide_id": slide_id,
                "model_id": settings.model_id,
                "kind": choice.kind,
                "rank": choice.rank,
                "x_um": x_um,
                "y_um": y_um,
                "size_um": tiles.step_px * f[0] * slide.mpp_x,
                "mean_score": choice.mean_score,
                "tissue_fraction": choice.tissue_fraction,
                "predicted_fraction": choice.predicted_fraction,
                "truth_fraction": choice.truth_fraction,
                "fp_fraction": choice.fp_fraction,
                "fn_fraction": choice.fn_fraction,
                "explained_class": class_name,
                "explained_score": float(explained.scores[number]),
                "method": explained.method,
                "note": explained.note,
                "explanation_file": f"{EXPLAIN_DIR}/{name}",
                "gallery_file": gallery_name,
                "seconds": per_tile,
            }
        )
    width = max(r.shape[1] for r in rows)
    gap = np.full((fig.GAP_PX, width, 3), 255, np.uint8)
    stacked: list[NDArray[np.uint8]] = []
    for number, row in enumerate(rows):
        if number:
            stacked.append(gap)
        stacked.append(
            np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)), constant_values=255)
        )
    result.gallery = settings.out_dir / gallery_name
    atomic_write_bytes(
        result.gallery,
        _png_bytes(
            np.concatenate(stacked, axis=0),
            {
                "slidefleet:slide_id": slide_id,
                "slidefleet:model_id": settings.model_id,
                "slidefleet:method": explained.method,
            },
        ),
    )
    return result
