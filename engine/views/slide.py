"""One slide's views: heatmap PNG, three-panel PNG, class map PNG (multi-class), QuPath GeoJSON.

Reads only what the pictures need: the slide level that fits ``max_side_px`` (never level 0 of a
large slide), the label levels nearest that scale, and the coarsest score level that is still at
least as fine as the thumbnail. GeoJSON regions come from the score map's finest level, as post
thresholds it. Every grid is mapped onto the thumbnail through its physical scale and offset.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.errors import ConfigError, SlideFleetError
from engine.store.atomic import atomic_write_bytes
from engine.store.frame import Frame, level_for_target, resample_nearest
from engine.store.slide_store import SlideStore
from engine.views import panels as fig
from engine.views import render
from engine.views.geojson import regions_feature_collection, write_geojson
from engine.views.grid import level_for_scale, level_for_size
from engine.views.inputs import PredictionStore
from engine.views.params import ViewParams
from engine.views.png import png_bytes
from engine.views.regions import RegionRule, SlideRegions, predicted_mask, slide_regions

log = logging.getLogger(__name__)


class SlideMismatch(SlideFleetError, ValueError):
    """A prediction store names another slide than the slide store it is drawn on."""


@dataclass(frozen=True)
class SlideSettings:
    """What every slide of a run shares: the model, the channel shown, where files go."""

    model_id: str
    params: ViewParams
    out_dir: Path
    channel: str | None = None
    """Class whose score the heatmap shows; ``None``: the last channel."""
    region_channel: str | None = None
    """Class that post thresholds into regions; ``None``: the last channel."""
    truth_labels: tuple[int, ...] | None = None
    """Annotation label values that are tumour (post's ``truth_labels``); ``None``: every non-zero."""


def channel_of(wanted: str | None, class_names: tuple[str, ...]) -> tuple[int, str]:
    """Index and name of channel ``wanted`` (``None``: the last) in a prediction's ``class_names``."""
    if wanted is None:
        return len(class_names) - 1, class_names[-1]
    if wanted not in class_names:
        raise ConfigError(
            f"channel {wanted!r} is not in the prediction's classes {list(class_names)}"
        )
    return class_names.index(wanted), wanted


@dataclass(frozen=True)
class SlideViews:
    """Files written for one slide, and what was read to make them."""

    slide_id: str
    thumbnail_level: str
    """Path of the slide level the thumbnail was read from ("0" is level 0)."""
    thumbnail_um: float
    score_level: str
    heatmap: Path
    panel: Path
    classes: Path | None = None
    geojson: Path | None = None
    n_regions: int | None = None
    predicted_px: int | None = None
    display_range: tuple[float, float] = (0.0, 1.0)

    @property
    def paths(self) -> list[Path]:
        return [p for p in (self.heatmap, self.panel, self.classes, self.geojson) if p is not None]


def label_on(slide: SlideStore, name: str, grid: Frame) -> NDArray[np.integer]:
    """Label ``name`` at the pixel centres of ``grid``, read the way post reads it
    (:func:`engine.store.frame.level_for_target`), so views draw what post measured."""
    level = level_for_target(slide.label_levels(name), grid)
    labels: NDArray[np.integer] = resample_nearest(slide.label(name, level), level, grid, fill=0)
    return labels


def _png_bytes(image: NDArray[np.uint8], text: dict[str, str], grid: Frame | None = None) -> bytes:
    dpi = None
    if grid is not None:  # pixels per inch from the physical pixel size
        dpi = (25_400.0 / grid.scale_x_um, 25_400.0 / grid.scale_y_um)
    return png_bytes(image, text, dpi)


def _heatmap_title(settings: SlideSettings, channel: str) -> str:
    p = settings.params
    parts = [f"Heatmap: {channel}" + (" (z-score)" if p.zscore else "")]
    if p.smooth_sigma_um:
        parts.append(f"σ {p.smooth_sigma_um:g} µm")
    if p.value_range is None and p.clip_percentiles is not None:
        parts.append(f"clip {p.clip_percentiles[0]:g}–{p.clip_percentiles[1]:g} %")
    return ", ".join(parts)


def _write_regions(
    found: SlideRegions, rule: RegionRule | None, slide_id: str, settings: SlideSettings
) -> Path:
    """The slide's QuPath GeoJSON of ``found`` (outlines with holes, level-0 px)."""
    description = "post regions as written"
    if rule is not None:
        description = (
            f"{rule.score_kind}>={rule.threshold:g};min_region_um2={rule.min_region_um2:g};"
            f"max_hole_um2={rule.max_hole_um2:g}"
        )
    collection = regions_feature_collection(
        found,
        slide_id=slide_id,
        model_id=settings.model_id,
        class_name=settings.params.region_class,
        colour=render.PREDICTED_RGB,
        rule_description=description,
    )
    return write_geojson(collection, settings.out_dir / f"{slide_id}.geojson")


def render_slide(
    slide_path: Path,
    prediction_path: Path,
    settings: SlideSettings,
    rule: RegionRule | None,
    *,
    stored_regions: Sequence[Mapping[str, Any]] | None = None,
) -> SlideViews:
    """Draw and write one slide's views; ``rule`` (post's threshold) enables regions and GeoJSON.

    ``stored_regions`` (post's ``regions`` rows of this slide, outlines included) are drawn and
    exported as they are; without them the regions are recomputed with ``rule``.
    """
    params = settings.params
    slide = SlideStore.open(slide_path)
    prediction = PredictionStore.open(prediction_path)
    if prediction.slide_id != slide.slide_id:
        raise SlideMismatch(
            f"{prediction_path} holds scores of {prediction.slide_id!r}, not {slide.slide_id!r}"
        )
    slide_id = slide.slide_id
    channel_index, channel = channel_of(settings.channel, prediction.class_names)

    thumb_level: Frame = level_for_size(slide.levels, params.max_side_px)
    thumb = thumb_level
    rgb = np.ascontiguousarray(np.moveaxis(np.asarray(slide.image(thumb_level)[:]), 0, -1))
    tissue = label_on(slide, "tissue", thumb) > 0

    score_level = level_for_scale(prediction.levels, thumb.pixel_um)
    score_grid = score_level
    scores = prediction.channel(score_level, channel_index)
    values = render.display_values(
        scores,
        label_on(slide, "tissue", score_grid) > 0,
        zscore=params.zscore,
        smooth_sigma_px=params.smooth_sigma_um / score_grid.pixel_um,
    )
    low, high = render.display_range(
        values,
        zscore=params.zscore,
        clip_percentiles=params.clip_percentiles,
        value_range=params.value_range,
    )
    values_thumb = resample_nearest(values, score_grid, thumb, fill=np.nan)
    heat = render.colourise(values_thumb, low, high, params.colormap, valid=tissue)
    heat_over = (
        render.alpha_by_value(heat, values_thumb, low, high) if params.overlay_by_value else heat
    )

    truth = None
    if "annotation" in slide.label_names:
        labels = label_on(slide, "annotation", thumb)
        truth = (
            labels != 0 if settings.truth_labels is None else np.isin(labels, settings.truth_labels)
        )

    predicted = None
    geojson_path = None
    n_regions = predicted_px = None
    if rule is None:  # no threshold (yet): an older export would show regions that no longer hold
        (settings.out_dir / f"{slide_id}.geojson").unlink(missing_ok=True)
    elif stored_regions is not None:
        finest = min(prediction.levels, key=lambda lv: lv.scale_x_um * lv.scale_y_um)
        found = SlideRegions.from_rows(
            stored_regions,
            pixel_um=finest.pixel_um,
            simplify_level0_px=params.simplify_um / ((slide.mpp_x + slide.mpp_y) / 2),
        )
        n_regions, predicted_px = len(found.regions), sum(r.area_px for r in found.regions)
        geojson_path = _write_regions(found, rule, slide_id, settings)
        predicted = found.mask_on(
            thumb,
            mpp_x=slide.mpp_x,
            mpp_y=slide.mpp_y,
            level0_translation_x_um=slide.levels[0].translation_x_um,
            level0_translation_y_um=slide.levels[0].translation_y_um,
        )
    else:
        finest = min(prediction.levels, key=lambda lv: lv.scale_x_um * lv.scale_y_um)
        grid0 = finest
        scores0 = prediction.channel(
            finest, channel_of(settings.region_channel, prediction.class_names)[0]
        )
        mask0 = predicted_mask(
            scores0, label_on(slide, "tissue", grid0) > 0, rule, pixel_um=grid0.pixel_um
        )
        found = slide_regions(
            mask0,
            scores0,
            grid0,
            mpp_x=slide.mpp_x,
            mpp_y=slide.mpp_y,
            level0_translation_x_um=slide.levels[0].translation_x_um,
            level0_translation_y_um=slide.levels[0].translation_y_um,
            simplify_um=params.simplify_um,
        )
        n_regions, predicted_px = len(found.regions), int(mask0.sum())
        geojson_path = _write_regions(found, rule, slide_id, settings)
        predicted = resample_nearest(mask0, grid0, thumb, fill=False).astype(bool)

    text = {
        "slidefleet:slide_id": slide_id,
        "slidefleet:model_id": settings.model_id,
        "slidefleet:channel": channel,
        "slidefleet:slide_level": thumb_level.path,
        "slidefleet:pixel_um": f"{thumb.pixel_um:g}",
        "slidefleet:display_range": f"{low:g},{high:g}",
    }
    heatmap_path = settings.out_dir / f"{slide_id}_heatmap.png"
    atomic_write_bytes(heatmap_path, _png_bytes(heat, text, thumb))

    panel = _panel(
        rgb, heat, heat_over, tissue, truth, predicted, low, high, settings, channel, rule
    )
    panel_path = settings.out_dir / f"{slide_id}_panel.png"
    atomic_write_bytes(panel_path, _png_bytes(panel, text))

    classes_path = None
    if len(prediction.class_names) > 1:
        classes_path = settings.out_dir / f"{slide_id}_classes.png"
        figure = _class_figure(
            rgb, prediction, score_level, score_grid, thumb, tissue, slide, params
        )
        atomic_write_bytes(classes_path, _png_bytes(figure, text))

    return SlideViews(
        slide_id=slide_id,
        thumbnail_level=thumb_level.path,
        thumbnail_um=thumb.pixel_um,
        score_level=score_level.path,
        heatmap=heatmap_path,
        panel=panel_path,
        classes=classes_path,
        geojson=geojson_path,
        n_regions=n_regions,
        predicted_px=predicted_px,
        display_range=(low, high),
    )


def _panel(
    rgb: NDArray[np.uint8],
    heat: NDArray[np.uint8],
    heat_over: NDArray[np.uint8],
    tissue: NDArray[np.bool_],
    truth: NDArray[np.bool_] | None,
    predicted: NDArray[np.bool_] | None,
    low: float,
    high: float,
    settings: SlideSettings,
    channel: str,
    rule: RegionRule | None,
) -> NDArray[np.uint8]:
    """Ground truth | heatmap | overlay, each on the thumbnail's grid, with legends below."""
    params = settings.params
    width = rgb.shape[1]
    line = render.line_width_px(width)
    size = fig.font_size_for(width)
    outline_entries: list[tuple[str, render.RGB, str]] = []

    if truth is not None:
        truth_panel = render.draw_outline(
            render.tint(rgb, truth, render.TRUTH_RGB, 0.35), truth, render.TRUTH_RGB, line
        )
        truth_title = "Ground truth" + ("" if truth.any() else " (none annotated)")
        outline_entries.append(("ground truth", render.TRUTH_RGB, "outline"))
    else:
        truth_panel = render.greyed(rgb)
        truth_title = "Ground truth: not available"

    white = np.full_like(rgb, 255)
    heat_panel = render.draw_outline(render.composite(white, heat), tissue, (190, 190, 190), 1)

    overlay = render.composite(rgb, heat_over, params.overlay_alpha)
    if truth is not None:
        overlay = render.draw_outline(overlay, truth, render.TRUTH_RGB, line)
    if predicted is not None and rule is not None:
        overlay = render.draw_outline(overlay, predicted, render.PREDICTED_RGB, line)
        outline_entries.append(
            (
                f"predicted ({rule.score_kind} ≥ {rule.threshold:.3g})",
                render.PREDICTED_RGB,
                "outline",
            )
        )

    label = channel + (" z-score" if params.zscore else " score")
    footers = [
        fig.legend([("ground truth", render.TRUTH_RGB, "fill")], width, size)
        if truth is not None
        else None,
        fig.colourbar(width, params.colormap, low, high, label, size),
        fig.legend(outline_entries, width, size) if outline_entries else None,
    ]
    return fig.compose_panels(
        [fig.framed(truth_panel), fig.framed(heat_panel), fig.framed(overlay)],
        [truth_title, _heatmap_title(settings, channel), "Overlay on the slide"],
        footers,
    )


def _class_figure(
    rgb: NDArray[np.uint8],
    prediction: PredictionStore,
    score_level: Frame,
    score_grid: Frame,
    thumb: Frame,
    tissue: NDArray[np.bool_],
    slide: SlideStore,
    params: ViewParams,
) -> NDArray[np.uint8]:
    """The most likely class per pixel over the slide, with a legend of class colours."""
    probabilities = prediction.all_channels(score_level)
    labels = render.class_map(probabilities, label_on(slide, "tissue", score_grid) > 0)
    labels_thumb = resample_nearest(labels, score_grid, thumb, fill=-1)
    labels_thumb[~tissue] = -1
    palette = render.class_palette(len(prediction.class_names))
    overlay = render.composite(
        rgb, render.class_map_rgba(labels_thumb, palette), params.overlay_alpha
    )
    width = rgb.shape[1]
    size = fig.font_size_for(width)
    entries = [
        (name, colour, "fill") for name, colour in zip(prediction.class_names, palette, strict=True)
    ]
    return fig.compose_panels(
        [fig.framed(overlay)], ["Class map: most likely class"], [fig.legend(entries, width, size)]
    )
