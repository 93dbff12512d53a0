"""Patch galleries and tile explanations for a cohort: one model, loaded once, slide by slide.

A slide whose gallery fails becomes a ``views`` failures row (``GalleryFailed``-like messages
come from the exception); the others go on. Rows go to ``tables/explanations`` and, for
multi-class models, ``tables/confusion`` (partitioned by ``model_id``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
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


def render_galleries(
    root: Path,
    model_ref: str,
    slide_ids: Sequence[str],
    settings: SlideSettings,
    rule_for: Callable[[str], RegionRule | None],
    *,
    post_params: dict[str, Any],
    splits: dict[str, str | None],
    run_id: str,
) -> GalleryReport:
    """Galleries of ``slide_ids`` for ``model_ref`` (a registered model; else nothing to explain)."""
    layout = FleetLayout(root)
    report = GalleryReport()
    if not slide_ids:
        return report
    try:
        registered = ModelRegistry(layout.root).resolve(model_ref)
    except ModelError:
        log.info("%s is not a registered model: no explanations", model_ref)
        return report
    try:
        module, layer, note = explainable_model(registered)
    except ModelError as exc:  # a card registered before its explain_layer was checked
        log.warning("%s", exc)
        module = load_model(registered.path, device="cpu")
        layer, note = None, f"input x gradient, not Grad-CAM: {exc}"
    model = ExplainModel(registered.card, module, layer, note)
    report.method_note = note
    for slide_id in slide_ids:
        source = str(layout.prediction_store(settings.model_id, slide_id))
        try:
            report.slides.append(
                render_gallery(
                    layout.slide_store(slide_id),
                    layout.prediction_store(settings.model_id, slide_id),
                    model,
                    settings,
                    rule_for(slide_id),
                    post_params=post_params,
                    split=splits.get(slide_id),
                )
            )
        except SlideFleetError as exc:
            report.failures.append(
                FailureRecord.from_exception(
                    "views", slide_id, exc, source_path=source, model_id=settings.model_id
                )
            )
        except Exception as exc:  # one slide's drawing bug must not lose the others' galleries
            log.exception("unexpected error explaining %s", slide_id)
            report.failures.append(
                FailureRecord.from_exception(
                    "views", slide_id, exc, source_path=source, model_id=settings.model_id
                )
            )
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
