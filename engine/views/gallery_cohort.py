"""Patch galleries and tile explanations for a cohort: one model, loaded once per process,
each slide's gallery drawn in the same task as its other views.

A slide whose gallery fails becomes a ``views`` failures row (``GalleryFailed``-like messages
come from the exception); the others go on. Rows go to ``tables/explanations`` and, for
multi-class models, ``tables/confusion`` (partitioned by ``model_id``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ModelError, OutputWriteError, SlideFleetError
from engine.explain.loading import explainable_model
from engine.models import ModelRegistry
from engine.models.loading import load_model
from engine.store import FleetLayout
from engine.tables import FailureRecord, write_table_part
from engine.views.gallery import ExplainModel, SlideGallery, render_gallery
from engine.views.regions import RegionRule
from engine.views.slide import SlideSettings

log = logging.getLogger(__name__)


@dataclass
class GalleryReport:
    slides: list[SlideGallery] = field(default_factory=list)
    failures: list[FailureRecord] = field(default_factory=list)
    method_note: str | None = None
    write_errors: list[str] = field(default_factory=list)

    @property
    def tiles(self) -> int:
        return sum(len(s.explanation_rows) for s in self.slides)

    @property
    def explain_seconds(self) -> float:
        return sum(s.explain_seconds for s in self.slides)


_EXPLAIN_MODELS: dict[tuple[str, int, int], tuple[ExplainModel, str]] = {}
"""Models loaded for explanation in this process, by (file, size, mtime): a Ray worker that
draws many slides' galleries loads the model once."""


def explain_model(root: Path, model_ref: str) -> ExplainModel | None:
    """The registered model, ready to explain (cached per process); ``None`` if not registered."""
    try:
        registered = ModelRegistry(root).resolve(model_ref)
    except ModelError:
        log.info("%s is not a registered model: no explanations", model_ref)
        return None
    stat = registered.path.stat()
    key = (str(registered.path), stat.st_size, stat.st_mtime_ns)
    if key not in _EXPLAIN_MODELS:
        try:
            module, layer, note = explainable_model(registered)
        except ModelError as exc:  # a card registered before its explain_layer was checked
            log.warning("%s", exc)
            module = load_model(registered.path, device="cpu")
            layer, note = None, f"input x gradient, not Grad-CAM: {exc}"
        _EXPLAIN_MODELS[key] = (ExplainModel(registered.card, module, layer, note), note)
    return _EXPLAIN_MODELS[key][0]


def draw_gallery(
    root: Path,
    model_ref: str,
    slide_id: str,
    settings: SlideSettings,
    rule: RegionRule | None,
    *,
    post_params: dict[str, Any],
    split: str | None,
) -> SlideGallery | FailureRecord | None:
    """One slide's gallery, explanations and confusion rows (``None``: model not registered).

    Runs wherever the slide's other views are drawn (a Ray task of the cohort's views)."""
    layout = FleetLayout(root)
    model = explain_model(layout.root, model_ref)
    if model is None:
        return None
    source = str(layout.prediction_store(settings.model_id, slide_id))
    try:
        return render_gallery(
            layout.slide_store(slide_id),
            layout.prediction_store(settings.model_id, slide_id),
            model,
            settings,
            rule,
            post_params=post_params,
            split=split,
        )
    except SlideFleetError as exc:
        return FailureRecord.from_exception(
            "views", slide_id, exc, source_path=source, model_id=settings.model_id
        )
    except Exception as exc:  # one slide's drawing bug must not lose the others' galleries
        log.exception("unexpected error explaining %s", slide_id)
        return FailureRecord.from_exception(
            "views", slide_id, exc, source_path=source, model_id=settings.model_id
        )


def collect_galleries(
    root: Path,
    model_ref: str,
    settings: SlideSettings,
    outcomes: Sequence[SlideGallery | FailureRecord | None],
    *,
    run_id: str,
) -> GalleryReport:
    """The cohort's galleries: failures kept, explanation and confusion rows written once."""
    layout = FleetLayout(root)
    report = GalleryReport()
    for outcome in outcomes:
        if isinstance(outcome, FailureRecord):
            report.failures.append(outcome)
        elif outcome is not None:
            report.slides.append(outcome)
    if not report.slides:
        return report
    model = explain_model(layout.root, model_ref)
    report.method_note = None if model is None else model.note
    partition = {"model_id": settings.model_id}
    for table, rows in (
        ("explanations", [r for s in report.slides for r in s.explanation_rows]),
        ("confusion", [r for s in report.slides for r in s.confusion_rows]),
    ):
        try:
            write_table_part(layout.tables_dir, table, rows, partition=partition, run_id=run_id)
        except OutputWriteError as exc:  # a full disk: the galleries are drawn, the rows lost
            log.error("%s", exc)
            report.write_errors.append(str(exc))
    return report


def _newest_per_slide(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of each slide's newest run (a rerun replaces a slide's tiles, it does not add)."""
    newest: dict[str, Any] = {}
    for row in rows:
        when = newest.get(row["slide_id"])
        if when is None or row["written_at"] > when:
            newest[row["slide_id"]] = row["written_at"]
    return [r for r in rows if r["written_at"] == newest[r["slide_id"]]]


def curation_sections(
    root: Path,
    model_id: str,
    slides: Sequence[dict[str, Any]],
    out_dir: Path,
    *,
    gallery_slides: int,
    image_width_px: int,
) -> list[tuple[str, str, str]]:
    """The report's QC, strata, gallery and confusion sections, from the tables on disk."""
    from engine.qc.gate import qc_verdicts
    from engine.tables import read_table
    from engine.views.api import _report_image
    from engine.views.report_curation import (
        confusion_section,
        gallery_section,
        qc_section,
        strata_section,
    )

    layout = FleetLayout(root)
    qc_rows = list(qc_verdicts(layout.tables_dir).values())

    def rows_of(table: str) -> list[dict[str, Any]]:
        found = read_table(layout.tables_dir, table).to_pylist()
        return _newest_per_slide([r for r in found if r.get("model_id") == model_id])

    explanations = rows_of("explanations")
    files = {
        r["slide_id"]: r["gallery_file"]
        for r in explanations
        if (out_dir / r["gallery_file"]).exists()
    }

    def badness(slide_id: str) -> float:
        mine = [r for r in explanations if r["slide_id"] == slide_id]
        return max(
            (max(r.get("fp_fraction") or 0.0, r.get("fn_fraction") or 0.0) for r in mine),
            default=0.0,
        )

    shown = sorted(files, key=lambda s: (-badness(s), s))[: max(0, gallery_slides)]
    images = {}
    for slide_id in shown:
        image = _report_image(out_dir / files[slide_id], image_width_px)
        if image is not None:
            images[slide_id] = image
    return [
        ("qc", "QC", qc_section(qc_rows)),
        ("split-strata", "Strata", strata_section(slides, qc_rows)),
        ("galleries", "Galleries", gallery_section(explanations, images, files)),
        ("confusion", "Confusion", confusion_section(rows_of("confusion"))),
    ]
