"""One slide's post-processing: open its maps inside the task, then pure compute on arrays.

Planning apart from I/O: :class:`SlidePlan` is a small picklable description made on the driver;
:func:`load_slide_maps` opens the prediction and slide stores *inside* the worker task (so no
zarr object crosses a process boundary, which is also what lets the same task run on Ray) and
resamples tissue and ground truth onto the prediction grid; :func:`slide_sweep` and
:func:`analyse_slide` are pure functions of the loaded arrays.

Frames. The prediction store's NGFF ``scale`` / ``translation`` give its pixel size and the
centre of its pixel 0 in µm, in the same physical frame as the slide store's labels. Labels are
sampled at the centres of the prediction pixels (nearest label pixel centre), from the coarsest
label level that is not coarser than the prediction and lines up with it (else the label's
base): shapes never need to agree. All of it goes through :mod:`engine.store.frame`. Level-0 pixel
``k`` spans ``[k, k + 1)`` and its centre lies at ``k * mpp`` µm (plus the level-0 translation).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
import zarr
from numpy.typing import NDArray

from engine.errors import SlideFleetError, StoreIncomplete
from engine.metrics import confusion_matrix, macro_dice, miou, per_class_iou_dice, slide_metrics
from engine.post.compute import (
    SweepCounts,
    label_regions,
    oracle_columns,
    predicted_mask,
    quantify,
    region_outlines,
    regions,
    zscore_over_tissue,
)
from engine.post.params import PostParams
from engine.store import read_completion
from engine.store.frame import (
    Frame,
    FrameError,
    level_for_target,
    multiscale_frames,
    resample_nearest,
)
from engine.tables import FailureRecord

log = logging.getLogger(__name__)

STAGE = "post"


class PredictionInvalid(SlideFleetError, ValueError):
    """A prediction store's metadata or array does not describe a score map of this slide."""


@dataclass(frozen=True, slots=True)
class SlidePlan:
    """What a worker needs to post-process one slide (paths, not open stores)."""

    slide_id: str
    slide_store: str
    prediction: str
    split: str | None
    label: str | None
    channel: int
    n_classes: int
    multiclass: bool


@dataclass(frozen=True)
class SlideMaps:
    """One slide's arrays on the prediction grid, and where that grid lies at level 0."""

    scores: NDArray[np.float32]
    """(C, H, W) model scores, NaN where not scored."""
    channel: int
    tissue: NDArray[np.bool_]
    """Scored tissue: tissue pixels whose every score is finite (the rest are not evaluated)."""
    annotation: NDArray[np.integer] | None
    """Ground-truth label values sampled on the grid, or ``None`` without ground truth."""
    pixel_um: float
    level0_px_per_pixel_x: float
    level0_px_per_pixel_y: float
    origin_x_level0_px: float
    origin_y_level0_px: float
    unscored_tissue_px: int = 0
    """Tissue pixels without a score: left out of ``tissue``, metrics and quantities, and counted."""

    @property
    def positive_scores(self) -> NDArray[np.float32]:
        return self.scores[self.channel]


@dataclass(frozen=True)
class SweepPart:
    """Pass-1 counts summed over some calibration slides, which slides, and their failures."""

    counts: SweepCounts | None
    slide_ids: tuple[str, ...]
    failures: tuple[FailureRecord, ...]


@dataclass(frozen=True)
class SlideResult:
    """Rows of one slide: its ``slides`` row and its ``regions`` rows (without provenance)."""

    slide_id: str
    row: dict[str, Any]
    regions: list[dict[str, Any]]


# --- reading --------------------------------------------------------------------------------


def _frames(attrs: dict[str, Any], what: str) -> list[Frame]:
    """Frames of every multiscale level, from NGFF metadata alone (shapes left 0)."""
    try:
        return multiscale_frames(attrs)
    except FrameError as exc:
        raise PredictionInvalid(f"{what}: {exc}") from None


def _attributes(path: Path) -> dict[str, Any]:
    """A zarr v3 node's attributes, read from its ``zarr.json`` (no store machinery needed)."""
    try:
        document = json.loads((path / "zarr.json").read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError) as exc:
        raise StoreIncomplete(f"{path}: not a readable zarr v3 node ({exc})") from None
    attributes: dict[str, Any] = document.get("attributes", {})
    return attributes


def _label_on_grid(slide_store: Path, name: str, target: Frame) -> NDArray[Any]:
    """Label ``name`` at the pixel centres of ``target``, from the level
    :func:`engine.store.frame.level_for_target` picks (opens that one level only)."""
    group_path = slide_store / "labels" / name
    chosen = level_for_target(_frames(_attributes(group_path), str(group_path)), target)
    array = zarr.open_array(group_path / chosen.path, mode="r")
    return resample_nearest(array, chosen.with_shape(*array.shape[-2:]), target)


def load_slide_maps(plan: SlidePlan) -> SlideMaps:
    """Open the plan's stores and return its maps on the prediction grid (runs in the task).

    Reads the slide store's metadata, its tissue and annotation labels at one level each, and
    the prediction's level 0: never an RGB level.
    """
    slide_path, prediction_path = Path(plan.slide_store), Path(plan.prediction)
    if read_completion(slide_path) is None:
        raise StoreIncomplete(f"{slide_path}: slide store has no completion record.")
    if read_completion(prediction_path) is None:
        raise StoreIncomplete(f"{prediction_path}: prediction store has no completion record.")
    slide_attrs = _attributes(slide_path)
    meta = slide_attrs["slidefleet"]
    mpp_x, mpp_y = float(meta["mpp_x"]), float(meta["mpp_y"])
    level0 = _frames(slide_attrs, str(slide_path))[0]
    label_names: set[str] = set()
    if (slide_path / "labels").is_dir():
        label_names = set(_attributes(slide_path / "labels").get("ome", {}).get("labels", []))
    if "tissue" not in label_names:
        raise StoreIncomplete(f"{slide_path}: slide store has no tissue label.")
    array = zarr.open_array(prediction_path / "0", mode="r")
    if array.ndim != 3 or array.shape[0] <= plan.channel:
        raise PredictionInvalid(
            f"{prediction_path}: array '0' has shape {array.shape}; expected (C, H, W) with "
            f"channel {plan.channel} of {plan.n_classes}."
        )
    grid = _frames(_attributes(prediction_path), str(prediction_path))[0].with_shape(
        *array.shape[-2:]
    )
    channels = slice(None) if plan.multiclass else slice(plan.channel, plan.channel + 1)
    scores = np.asarray(array[channels], dtype=np.float32)
    tissue = _label_on_grid(slide_path, "tissue", grid) != 0
    scored = np.isfinite(scores).all(axis=0)
    unscored_tissue_px = int(np.count_nonzero(tissue & ~scored))
    if unscored_tissue_px:
        log.warning(
            "%s: %d tissue pixels have no score; they are left out of metrics",
            plan.slide_id,
            unscored_tissue_px,
        )
    tissue &= scored
    annotation = (
        _label_on_grid(slide_path, "annotation", grid) if "annotation" in label_names else None
    )
    if not math.isclose(grid.scale_x_um, grid.scale_y_um, rel_tol=0.01):
        log.warning(
            "%s: anisotropic prediction pixels (%g x %g µm); areas use their geometric mean",
            plan.slide_id,
            grid.scale_x_um,
            grid.scale_y_um,
        )
    return SlideMaps(
        scores=scores,
        channel=plan.channel if plan.multiclass else 0,
        tissue=tissue,
        unscored_tissue_px=unscored_tissue_px,
        annotation=annotation,
        pixel_um=math.sqrt(grid.scale_x_um * grid.scale_y_um),
        level0_px_per_pixel_x=grid.scale_x_um / mpp_x,
        level0_px_per_pixel_y=grid.scale_y_um / mpp_y,
        origin_x_level0_px=(grid.translation_x_um - grid.scale_x_um / 2 - level0.translation_x_um)
        / mpp_x
        + 0.5,
        origin_y_level0_px=(grid.translation_y_um - grid.scale_y_um / 2 - level0.translation_y_um)
        / mpp_y
        + 0.5,
    )


# --- pure compute ---------------------------------------------------------------------------


def truth_mask(
    annotation: NDArray[np.integer], truth_labels: tuple[int, ...] | None
) -> NDArray[np.bool_]:
    """Tumour truth from label values: ``truth_labels``, or every non-zero label."""
    if truth_labels is None:
        return np.asarray(annotation != 0)
    return np.isin(annotation, np.asarray(truth_labels))


def thresholded_scores(maps: SlideMaps, params: PostParams) -> NDArray[np.float32]:
    """The scores the threshold applies to: raw, or z-scored over this slide's tissue."""
    raw = maps.positive_scores
    return zscore_over_tissue(raw, maps.tissue) if params.score == "zscore" else raw


def slide_sweep(maps: SlideMaps, params: PostParams) -> SweepCounts:
    """Sweep counts of one calibration slide over its tissue (summed over the split later)."""
    if maps.annotation is None:
        raise ValueError("slide_sweep needs a slide with ground truth")
    truth = truth_mask(maps.annotation, params.truth_labels)
    return SweepCounts.from_slide(
        thresholded_scores(maps, params), truth, maps.tissue, params.threshold_grid()
    )


def _none_if_nan(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


def _multiclass_columns(maps: SlideMaps, params: PostParams, n_classes: int) -> dict[str, Any]:
    """Per-slide confusion matrix (rows truth, columns argmax prediction) over scored tissue."""
    assert maps.annotation is not None
    values = params.class_label_values or tuple(range(n_classes))
    if len(values) != n_classes:
        raise PredictionInvalid(
            f"class_label_values has {len(values)} values for a model with {n_classes} classes"
        )
    lut = np.full(int(max(maps.annotation.max(initial=0), max(values))) + 1, -1, dtype=np.int64)
    for index, value in enumerate(values):
        lut[value] = index
    truth = lut[maps.annotation.astype(np.int64)]
    finite = np.all(np.isfinite(maps.scores), axis=0)
    valid = maps.tissue & finite & (truth >= 0)
    pred = np.argmax(np.where(np.isfinite(maps.scores), maps.scores, -np.inf), axis=0)
    cm = confusion_matrix(pred, np.maximum(truth, 0), valid, n_classes=n_classes)
    iou, dice = per_class_iou_dice(cm)
    return {
        "confusion_matrix": cm.tolist(),
        "class_iou": iou,
        "class_dice": dice,
        "miou": miou(cm),
        "macro_dice": macro_dice(cm),
    }


def analyse_slide(
    maps: SlideMaps,
    params: PostParams,
    *,
    threshold: float,
    threshold_objective: str,
    n_classes: int = 1,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Threshold, clean, label, measure, quantify and score one slide.

    The predicted mask is ``scores >= threshold`` on tissue, then :func:`clean_mask` (µm²
    parameters); regions and quantities come from the cleaned mask, metrics compare it with the
    ground truth over tissue. Region mean / max scores are the model's raw scores. Returns the
    ``slides`` row and the ``regions`` rows, without keys or provenance.
    """
    raw = maps.positive_scores
    scores = thresholded_scores(maps, params)
    # ``scores`` are already z-scored when params.score asks for it: compare them as they are.
    cleaned = predicted_mask(
        scores,
        maps.tissue,
        threshold=threshold,
        score_kind="probability",
        pixel_um=maps.pixel_um,
        min_region_um2=params.min_region_um2,
        max_hole_um2=params.max_hole_um2,
    )
    labels, _ = label_regions(cleaned)
    placement = {
        "level0_px_per_pixel_x": maps.level0_px_per_pixel_x,
        "level0_px_per_pixel_y": maps.level0_px_per_pixel_y,
        "origin_x_level0_px": maps.origin_x_level0_px,
        "origin_y_level0_px": maps.origin_y_level0_px,
    }
    found = regions(cleaned, raw, maps.pixel_um, labels=labels, **placement)
    outlines = region_outlines(labels, **placement)  # written once; views draw these
    quantities = quantify(cleaned, maps.tissue, maps.pixel_um, found)
    on_tissue = raw[maps.tissue & np.isfinite(raw)].astype(np.float64)
    row: dict[str, Any] = {
        "score_kind": params.score,
        "threshold": float(threshold),
        "threshold_objective": threshold_objective,
        "pixel_um": maps.pixel_um,
        "score_mean": _none_if_nan(on_tissue.mean()) if on_tissue.size else None,
        "score_std": _none_if_nan(on_tissue.std()) if on_tissue.size else None,
        "tissue_px": quantities.tissue_px,
        "unscored_tissue_px": maps.unscored_tissue_px,
        "tumour_px": quantities.tumour_px,
        "tumour_pct_of_tissue": quantities.tumour_pct_of_tissue,
        "tumour_mm2": quantities.tumour_mm2,
        "n_regions": quantities.n_regions,
        "largest_region_mm2": quantities.largest_region_mm2,
        "has_ground_truth": maps.annotation is not None,
    }
    if maps.annotation is not None:
        truth = truth_mask(maps.annotation, params.truth_labels)
        metrics = slide_metrics(
            cleaned,
            scores,
            truth,
            maps.tissue,
            pixel_um=maps.pixel_um,
            patch_um=params.patch_um,
            positive_fraction=params.patch_positive_fraction,
        )
        metrics.pop("tissue_px")  # same tissue as the quantities
        row.update(metrics)
        if params.oracle:
            oracle = oracle_columns(
                scores, truth, maps.tissue, params.threshold_grid(), (params.objective,)
            )
            row["oracle_threshold"] = oracle[f"oracle_{params.objective}_threshold"]
            row["oracle_value"] = oracle[f"oracle_{params.objective}"]
        if n_classes > 1:
            row.update(_multiclass_columns(maps, params, n_classes))
    region_rows = [
        {
            "region_id": r.region_id,
            "area_px": r.area_px,
            "area_um2": r.area_um2,
            "centroid_x_level0_px": r.centroid_x_level0_px,
            "centroid_y_level0_px": r.centroid_y_level0_px,
            "bbox_x0_level0_px": r.bbox_x0_level0_px,
            "bbox_y0_level0_px": r.bbox_y0_level0_px,
            "bbox_x1_level0_px": r.bbox_x1_level0_px,
            "bbox_y1_level0_px": r.bbox_y1_level0_px,
            "mean_score": r.mean_score,
            "max_score": r.max_score,
            "outline_wkb": shapely.to_wkb(outlines[r.region_id])
            if r.region_id in outlines
            else None,
        }
        for r in found
    ]
    return row, region_rows


# --- the tasks (run on Dask workers; failures come back as data) ---------------------------


def _failure(plan: SlidePlan, error: BaseException, model_id: str) -> FailureRecord:
    return FailureRecord.from_exception(
        STAGE, plan.slide_id, error, source_path=plan.prediction, model_id=model_id
    )


def sweep_task(plan: SlidePlan, params: PostParams, model_id: str) -> SweepPart:
    """Pass 1 on one calibration slide: its sweep counts (none without ground truth)."""
    try:
        maps = load_slide_maps(plan)
        if maps.annotation is None:
            return SweepPart(None, (), ())
        return SweepPart(slide_sweep(maps, params), (plan.slide_id,), ())
    except Exception as exc:  # a bug in one slide must not take the cohort down
        if not isinstance(exc, SlideFleetError):
            log.exception("unexpected error in the post sweep of %s", plan.slide_id)
        return SweepPart(None, (), (_failure(plan, exc, model_id),))


def slide_task(
    plan: SlidePlan, params: PostParams, model_id: str, threshold: float, threshold_objective: str
) -> SlideResult | FailureRecord:
    """Pass 2 on one slide: its ``slides`` and ``regions`` rows."""
    try:
        maps = load_slide_maps(plan)
        row, region_rows = analyse_slide(
            maps,
            params,
            threshold=threshold,
            threshold_objective=threshold_objective,
            n_classes=plan.n_classes if plan.multiclass else 1,
        )
    except Exception as exc:
        if not isinstance(exc, SlideFleetError):
            log.exception("unexpected error post-processing %s", plan.slide_id)
        return _failure(plan, exc, model_id)
    row = {"slide_id": plan.slide_id, "split": plan.split, "label": plan.label, **row}
    return SlideResult(plan.slide_id, row, [{"slide_id": plan.slide_id, **r} for r in region_rows])


def sum_sweeps(*parts: SweepPart) -> SweepPart:
    """Tree-reduction step of pass 1: the sum of the parts' counts, slides and failures."""
    total: SweepCounts | None = None
    for part in parts:
        if part.counts is not None:
            total = part.counts if total is None else total + part.counts
    return SweepPart(
        total,
        tuple(s for part in parts for s in part.slide_ids),
        tuple(f for part in parts for f in part.failures),
    )
