"""``slidefleet evaluate``: slide AUC from score maps' maxima and CAMELYON16 lesion FROC, on Ray.

One Ray task per ``slides_per_task`` slides reads each committed score map with its tissue and
ground-truth labels on the map's grid (the post stage's reader), and returns

* the slide score: the maximum of the positive class over tissue (CAMELYON16 task 1's
  simplest answer);
* detections: one per connected region of ``score >= detection_threshold``, at the region's
  highest-scoring pixel with that score as confidence; and the slide's evaluation lesions from
  its annotation (75 µm growth, 275 µm ITC rule), evaluated on the map's own pixel grid
  (the challenge evaluated at level 5, about 7.8 µm/px).

The driver writes ``tables/lesions`` (one row per detection, with its outcome),
``tables/froc`` (the curve and the read-off at 1/4..8 FPs per slide) and the slide AUC with its
bootstrap CI to ``tables/slide_metrics`` (source ``map_max``). A slide that cannot be read is a
failures row; slides without an annotation are left out of the FROC (their truth is unknown).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray

from engine.cluster import ensure_ray
from engine.errors import ConfigError, SlideFleetError
from engine.evaluate.lesion_rows import detection_outcomes
from engine.evaluate.params import MapEvalParams
from engine.metrics.lesions import (
    FrocResult,
    SlideDetections,
    detections_from_regions,
    froc,
    lesion_map,
    match_detections,
)
from engine.mil.evaluate import slide_metric_rows
from engine.mil.stage import labelled_slides
from engine.models import ModelRegistry
from engine.post.slide_task import SlidePlan, load_slide_maps, truth_mask
from engine.runs import new_run_id
from engine.store import FleetLayout
from engine.tables import FailureRecord, write_failures, write_table_part

STAGE = "evaluate"


@dataclass
class MapEvalReport:
    run_id: str
    model_id: str
    slide_rows: list[dict[str, Any]] = field(default_factory=list)
    lesion_rows: list[dict[str, Any]] = field(default_factory=list)
    froc: FrocResult | None = None
    froc_note: str | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    failures: list[FailureRecord] = field(default_factory=list)
    seconds: float = 0.0
    report_path: Path | None = None


def _evaluate_in_task(plans: list[SlidePlan], params_json: str, model_id: str) -> list[Any]:
    params = MapEvalParams.model_validate_json(params_json)
    out: list[Any] = []
    for plan in plans:
        try:
            maps = load_slide_maps(plan)
            scores = maps.positive_scores
            on_tissue = np.where(maps.tissue & np.isfinite(scores), scores, np.nan)
            slide_score = float(np.nanmax(on_tissue)) if np.isfinite(on_tissue).any() else None
            detections = detections_from_regions(
                np.nan_to_num(on_tissue, nan=-np.inf),
                np.nan_to_num(on_tissue, nan=-np.inf) >= params.detection_threshold,
            )
            lesions = None
            matched = None
            if maps.annotation is not None:
                truth = truth_mask(maps.annotation, params.truth_labels)
                lesions = lesion_map(truth, maps.pixel_um) if truth.any() else None
                matched = match_detections(detections, lesions)
            outcomes = detection_outcomes(detections, lesions)
            rows = (
                [
                    {
                        "slide_id": plan.slide_id,
                        "model_id": model_id,
                        # d.x_px is in map pixels with pixel c spanning [c, c + 1): a centre
                        # is c + 0.5, so level-0 = origin + x_px * scale (post's centroids too).
                        "x": maps.origin_x_level0_px + d.x_px * maps.level0_px_per_pixel_x,
                        "y": maps.origin_y_level0_px + d.y_px * maps.level0_px_per_pixel_y,
                        "confidence": d.confidence,
                        **o,
                    }
                    for d, o in zip(detections, outcomes, strict=True)
                ]
                if matched is not None
                else []
            )
            out.append((plan.slide_id, plan.split, plan.label, slide_score, matched, rows, None))
        except (SlideFleetError, ValueError, OSError, KeyError) as exc:
            out.append(
                (
                    plan.slide_id,
                    plan.split,
                    plan.label,
                    None,
                    None,
                    [],
                    FailureRecord.from_exception(
                        STAGE, plan.slide_id, exc, model_id=model_id, source_path=plan.prediction
                    ),
                )
            )
    return out


def _froc_rows(result: FrocResult, model_id: str, split: str) -> list[dict[str, Any]]:
    common = {
        "model_id": model_id,
        "split": split,
        "score": result.score,
        "n_slides": result.slide_count,
        "n_lesions": result.lesion_count,
    }
    rows = [
        {
            **common,
            "kind": "curve",
            "fp_per_slide": float(f),
            "sensitivity": float(s),
            "threshold": None if not np.isfinite(t) else float(t),
        }
        for f, s, t in zip(result.fp_per_slide, result.sensitivity, result.thresholds, strict=True)
    ]
    rows += [
        {**common, "kind": "at_rate", "fp_per_slide": r, "sensitivity": s, "threshold": None}
        for r, s in zip(result.fp_rates, result.sensitivity_at, strict=True)
    ]
    return rows


def evaluate_maps(
    root: Path | str,
    model: str,
    manifest: Path | str,
    params: MapEvalParams | None = None,
    *,
    address: str | None = None,
    run_id: str | None = None,
) -> MapEvalReport:
    """Slide AUC from map maxima and lesion FROC for ``model``'s committed score maps."""
    started = time.perf_counter()
    params = params or MapEvalParams()
    layout = FleetLayout(Path(root))
    registered = ModelRegistry(layout.root).resolve(model)
    if registered.card.is_extractor:
        raise ConfigError(
            f"{registered.ref} is an embedding extractor: it has no score map to evaluate."
        )
    report = MapEvalReport(run_id or new_run_id(), registered.model_id)
    card = registered.card
    plans = [
        SlidePlan(
            s.slide_id,
            str(layout.slide_store(s.slide_id)),
            str(layout.prediction_store(registered.model_id, s.slide_id)),
            s.split,
            s.label,
            card.positive_class_index,
            card.num_channels,
            False,
        )
        for s in labelled_slides(manifest)
        if params.splits is None or s.split in params.splits
    ]
    ensure_ray(address)
    task = ray.remote(_evaluate_in_task).options(num_cpus=1)
    refs = [
        task.remote(
            plans[i : i + params.slides_per_task], params.model_dump_json(), registered.model_id
        )
        for i in range(0, len(plans), params.slides_per_task)
    ]
    matched_by_split: dict[str, list[SlideDetections]] = {"all": []}
    for part in ray.get(refs):
        for slide_id, split, label, score, matched, rows, failure in part:
            if failure is not None:
                report.failures.append(failure)
                continue
            report.slide_rows.append(
                {
                    "slide_id": slide_id,
                    "split": split,
                    "score": score,
                    "predicted_class": None,
                    "true_label": None
                    if label is None
                    else (params.positive_label if label == params.positive_label else "negative"),
                }
            )
            report.lesion_rows.extend(rows)
            if matched is not None:
                matched_by_split["all"].append(matched)
                if split:
                    matched_by_split.setdefault(split, []).append(matched)
    report.metrics = slide_metric_rows(
        "map_max",
        registered.model_id,
        report.slide_rows,
        ["negative", params.positive_label],
        params.positive_label,
        resamples=params.bootstrap_resamples,
        seed=params.seed,
    )
    froc_rows: list[dict[str, Any]] = []
    for split, slides in matched_by_split.items():
        if not slides or sum(s.lesion_count for s in slides) == 0:
            if split == "all":
                report.froc_note = "no slide with an annotated lesion larger than an ITC cluster"
            continue
        result = froc(slides, drop_lowest_threshold=params.froc_mode == "challenge")
        if split == "all":
            report.froc = result
        froc_rows += _froc_rows(result, registered.model_id, split)
    partition = {"model_id": registered.model_id}
    write_table_part(
        layout.tables_dir,
        "slide_metrics",
        report.metrics,
        partition=partition,
        run_id=report.run_id,
    )
    write_table_part(
        layout.tables_dir, "lesions", report.lesion_rows, partition=partition, run_id=report.run_id
    )
    write_table_part(
        layout.tables_dir, "froc", froc_rows, partition=partition, run_id=report.run_id
    )
    write_failures(layout.tables_dir, report.failures, run_id=report.run_id)
    from engine.views.slide_level_report import write_slide_level_report

    report.report_path = write_slide_level_report(
        layout.root, registered.model_id, f"SlideFleet slide-level evaluation: {registered.ref}"
    )
    report.seconds = time.perf_counter() - started
    return report


def summary_lines(report: MapEvalReport) -> Sequence[str]:
    lines = []
    for m in report.metrics:
        if m["statistic"] == "auc":
            ci = f" [{m['low']:.3f}, {m['high']:.3f}]" if m["low"] is not None else ""
            value = "-" if m["value"] is None else f"{m['value']:.3f}"
            lines.append(
                f"  slide AUC (map max) {m['split']:11s} {value}{ci} ({m['n_slides']} slides)"
            )
    if report.froc is not None:
        at = ", ".join(
            f"{r:g}: {s:.2f}"
            for r, s in zip(report.froc.fp_rates, report.froc.sensitivity_at, strict=True)
        )
        lines.append(
            f"  FROC {report.froc.score:.3f} over {report.froc.slide_count} slides, "
            f"{report.froc.lesion_count} lesions (sensitivity at FPs/slide {at})"
        )
    elif report.froc_note:
        lines.append(f"  FROC undefined: {report.froc_note}")
    return lines
