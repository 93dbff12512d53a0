"""``render_views``: every slide's pictures and GeoJSON, then the cohort report, for one model.

Slides are drawn concurrently: as Ray tasks spread over the cluster's nodes when Ray is up (a
cohort run), else in threads here (the work is reading small levels and numpy); a slide that
fails becomes a ``views`` row of the failures table and the others go on.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import platform
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any

from PIL import Image

from engine import __version__
from engine.errors import ConfigError, ModelError, OutputWriteError, SlideFleetError
from engine.models import ModelCard, ModelRegistry
from engine.runs import new_run_id
from engine.store import FleetLayout, read_completion
from engine.store.atomic import atomic_write_bytes
from engine.tables import FailureRecord, write_failures
from engine.views.gallery import SlideGallery
from engine.views.gallery_cohort import collect_galleries, curation_sections, draw_gallery
from engine.views.inputs import (
    PostResults,
    completed_prediction_ids,
    prediction_attributes,
    read_failure_rows,
    read_post_results,
    read_run_records,
)
from engine.views.params import ViewParams
from engine.views.regions import RegionRule
from engine.views.report import ReportInputs, best_and_worst, build_report_html
from engine.views.slide import SlideSettings, SlideViews, render_slide

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"


@dataclass
class ViewsReport:
    """What ``render_views`` wrote, and which slides failed."""

    run_id: str
    model_id: str
    model_ref: str
    out_dir: Path
    slides: list[SlideViews] = field(default_factory=list)
    report: Path | None = None
    failures: list[FailureRecord] = field(default_factory=list)
    seconds: float = 0.0
    write_errors: list[str] = field(default_factory=list)  # outputs that could not be written
    galleries: list[Path] = field(default_factory=list)
    streamed: int = 0  # slides whose streaming run's drawing was kept (not drawn again here)

    @property
    def paths(self) -> list[Path]:
        found = [p for s in self.slides for p in s.paths] + self.galleries
        return found + ([self.report] if self.report is not None else [])


Drawn = tuple[SlideViews | FailureRecord, SlideGallery | FailureRecord | None]
"""One slide's views and its gallery (``None``: the model is not registered), or failures."""

_ROW_KEYS = ("threshold", "score_kind", "n_regions")
"""What a slide's pictures depend on in its post row (with the regions' outlines)."""


@dataclass(frozen=True)
class StreamedViews:
    """A slide drawn by a streaming run, with the post row it was drawn from."""

    slide_id: str
    row: dict[str, Any]
    drawn: Drawn

    def matches(self, post: PostResults) -> bool:
        """Whether post's tables hold the row these pictures were drawn from."""
        written = post.slide(self.slide_id)
        return written is not None and all(written.get(k) == self.row.get(k) for k in _ROW_KEYS)


@dataclass(frozen=True)
class _Model:
    model_id: str
    ref: str
    card: ModelCard | None


def _resolve_model(layout: FleetLayout, model: str) -> _Model:
    """``name[:version]`` from the registry, or a bare model_id that has predictions."""
    try:
        registered = ModelRegistry(layout.root).resolve(model)
        return _Model(registered.model_id, registered.ref, registered.card)
    except ModelError:
        if (layout.predictions_dir / model).is_dir():
            return _Model(model, model, None)
        raise


def _check_channel(model: _Model, wanted: str | None) -> str | None:
    """``wanted`` if the model has that class (the card's positive class when ``None``)."""
    if model.card is None:
        return wanted
    names = list(model.card.class_names)
    if wanted is not None and wanted not in names:
        raise ConfigError(f"channel {wanted!r} is not a class of {model.ref}: {names}")
    return wanted if wanted is not None else names[model.card.positive_class_index]


def _rule(post: PostResults, slide_id: str, params: ViewParams) -> RegionRule | None:
    """Post's threshold and morphology for the slide, else ``params.threshold``, else none.

    Morphology (µm²) comes from ``params`` when set there, else from post's recorded parameters.
    """
    post_params = post.params

    def morphology(name: str) -> float:
        mine = getattr(params, name)
        return float(mine if mine is not None else post_params.get(name, 0.0))

    row = post.slide(slide_id)
    if row is not None and row.get("threshold") is not None:
        return RegionRule(
            float(row["threshold"]),
            row["score_kind"],
            morphology("min_region_um2"),
            morphology("max_hole_um2"),
        )
    threshold = (post.record or {}).get("threshold")
    if threshold is not None and post_params.get("score") in ("probability", "zscore"):
        return RegionRule(
            float(threshold),
            post_params["score"],
            morphology("min_region_um2"),
            morphology("max_hole_um2"),
        )
    if params.threshold is not None:
        return RegionRule(
            params.threshold,
            params.threshold_score_kind,
            morphology("min_region_um2"),
            morphology("max_hole_um2"),
        )
    return None


def _post_regions(
    post: PostResults, slide_id: str, params: ViewParams
) -> list[dict[str, Any]] | None:
    """Post's own regions of the slide (outlines included) when views draw post's rule as is.

    ``None`` (recompute) when post did not threshold the slide, or when the views set their own
    morphology, or when the table predates outlines.
    """
    row = post.slide(slide_id)
    if row is None or row.get("threshold") is None:
        return None
    if params.min_region_um2 is not None or params.max_hole_um2 is not None:
        return None
    rows = post.regions_of(slide_id)
    if len(rows) != row.get("n_regions") or any(r.get("outline_wkb") is None for r in rows):
        return None
    return rows


@dataclass(frozen=True)
class ViewContext:
    """What every slide of one model's views is drawn with (picklable: shipped to Ray tasks)."""

    root: Path
    model: _Model
    params: ViewParams
    settings: SlideSettings

    @property
    def layout(self) -> FleetLayout:
        return FleetLayout(self.root)


def view_context(
    root: Path | str, model: str, params: ViewParams, post: PostResults
) -> ViewContext:
    """Resolve ``model`` and the drawing settings; creates ``ROOT/views/<model_id>/``."""
    layout = FleetLayout(Path(root))
    resolved = _resolve_model(layout, model)
    out_dir = layout.views_dir / resolved.model_id
    out_dir.mkdir(parents=True, exist_ok=True)
    region_channel = _check_channel(resolved, post.params.get("positive_class"))
    truth_labels = post.params.get("truth_labels")
    settings = SlideSettings(
        resolved.model_id,
        params,
        out_dir,
        channel=_check_channel(resolved, params.channel) if params.channel else region_channel,
        region_channel=region_channel,
        truth_labels=tuple(truth_labels) if truth_labels is not None else None,
    )
    return ViewContext(layout.root, resolved, params, settings)


def draw_slide(context: ViewContext, post: PostResults, slide_id: str) -> Drawn:
    """One slide's heatmap, panel, GeoJSON and gallery, or its failure rows.

    ``post`` needs only this slide's rows (a streaming run passes the rows post just computed).
    """
    layout, model, params = context.layout, context.model, context.params
    source = str(layout.predictions_dir / model.model_id / f"{slide_id}.zarr")
    rule = _rule(post, slide_id, params)
    try:
        drawn: SlideViews | FailureRecord = render_slide(
            layout.slide_store(slide_id),
            layout.prediction_store(model.model_id, slide_id),
            context.settings,
            rule,
            stored_regions=_post_regions(post, slide_id, params),
        )
    except SlideFleetError as exc:
        drawn = FailureRecord.from_exception(
            "views", slide_id, exc, source_path=source, model_id=model.model_id
        )
    except Exception as exc:  # a drawing bug on one slide must not lose the cohort's report
        log.exception("unexpected error drawing %s", slide_id)
        drawn = FailureRecord.from_exception(
            "views", slide_id, exc, source_path=source, model_id=model.model_id
        )
    if isinstance(drawn, FailureRecord):
        return drawn, None
    row = post.slide(slide_id) or {}
    # The gallery in the same task (its confusion rows even with galleries turned off).
    gallery = draw_gallery(
        layout.root,
        model.ref,
        slide_id,
        context.settings,
        rule,
        post_params=post.params,
        split=row.get("split"),
    )
    return drawn, gallery


def render_views(
    root: Path | str,
    model: str,
    *,
    params: ViewParams | None = None,
    slide_ids: Sequence[str] | None = None,
    run_id: str | None = None,
    report: bool = True,
    drawn: Sequence[StreamedViews] = (),
) -> ViewsReport:
    """Write ``ROOT/views/<model_id>/``: per-slide heatmap, panel and GeoJSON, and ``report.html``.

    Parameters
    ----------
    root
        Fleet root.
    model
        ``name[:version]`` of a registered model, or a model_id with predictions.
    params
        How to draw (:class:`ViewParams`); defaults otherwise.
    slide_ids
        Slides to draw; default: every slide with a completed prediction for the model. A listed
        slide without one is a failure. The report always covers the whole cohort.
    report
        Also write ``report.html``.
    drawn
        Slides already drawn by a streaming run (:class:`engine.views.stream.ViewStream`): kept,
        not drawn again, where post's tables hold the very row each was drawn from.
    """
    started = time.perf_counter()
    params = params or ViewParams()
    layout = FleetLayout(Path(root))
    post = read_post_results(layout.root, _resolve_model(layout, model).model_id)
    context = view_context(layout.root, model, params, post)
    result = ViewsReport(
        run_id or new_run_id(), context.model.model_id, context.model.ref, context.settings.out_dir
    )
    predictions_dir = layout.predictions_dir / context.model.model_id
    ids = list(slide_ids) if slide_ids is not None else completed_prediction_ids(predictions_dir)
    # A streamed drawing is kept when post's tables hold the row it was drawn from (a slide post
    # left out at the end, or re-computed differently, is drawn again from the tables).
    wanted = set(ids)
    by_id: dict[str, Drawn] = {
        v.slide_id: v.drawn for v in drawn if v.slide_id in wanted and v.matches(post)
    }
    result.streamed = len(by_id)
    remaining = [slide_id for slide_id in ids if slide_id not in by_id]
    if remaining:
        by_id.update(zip(remaining, _dispatch(context, post, remaining), strict=True))
    outcomes = [by_id[slide_id] for slide_id in ids]

    gallery_outcomes: list[SlideGallery | FailureRecord | None] = []
    for outcome, gallery in outcomes:
        if isinstance(outcome, FailureRecord):
            result.failures.append(outcome)
        else:
            result.slides.append(outcome)
            _check_against_post(outcome, post)
        gallery_outcomes.append(gallery)
    galleries = collect_galleries(
        layout.root, context.model.ref, context.settings, gallery_outcomes, run_id=result.run_id
    )
    result.galleries = [g.gallery for g in galleries.slides if g.gallery is not None]
    result.failures += galleries.failures
    result.write_errors += galleries.write_errors
    # A full disk must not lose the run: the failures stay in this report (and the run record).
    try:
        write_failures(layout.tables_dir, result.failures, run_id=result.run_id)
    except OutputWriteError as exc:
        log.error("%s", exc)
        result.write_errors.append(str(exc))

    if report:
        out_dir = result.out_dir
        inputs = _report_inputs(layout, context.model, post, result, params)
        inputs.extra_sections = curation_sections(
            layout.root,
            context.model.model_id,
            post.slides,
            out_dir,
            gallery_slides=2 * params.report_panels,
            image_width_px=params.report_image_width_px,
        )
        html = build_report_html(inputs)
        try:
            atomic_write_bytes(out_dir / REPORT_FILE, html.encode("utf-8"))
            result.report = out_dir / REPORT_FILE
        except OSError as exc:
            message = f"cannot write the report {out_dir / REPORT_FILE}: {exc.strerror or exc}"
            log.error("%s", message)
            result.write_errors.append(message)
    result.seconds = time.perf_counter() - started
    return result


def _dispatch(context: ViewContext, post: PostResults, ids: Sequence[str]) -> Iterator[Drawn]:
    """Each slide as a Ray task spread over the cluster's nodes when Ray is up (a cohort run),
    else in ``params.workers`` threads here; outcomes in the order of ``ids``."""
    import ray

    if not ray.is_initialized():
        workers = min(context.params.workers, len(ids))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            yield from pool.map(partial(draw_slide, context, post), ids)
        return
    rows = post.per_slide(ids)
    refs = [draw_task(context, rows[slide_id], slide_id) for slide_id in ids]
    for slide_id, ref in zip(ids, refs, strict=True):
        yield ray_outcome(context, slide_id, ref)


def draw_task(context: ViewContext, post: Any, slide_id: str, *, num_cpus: float = 1.0) -> Any:
    """Submit :func:`draw_slide` as a Ray task spread over nodes (``post``: rows or their ref)."""
    return _remote_draw().options(num_cpus=num_cpus).remote(context, post, slide_id)


@cache
def _remote_draw() -> Any:
    import ray

    return ray.remote(num_cpus=1, max_retries=2, scheduling_strategy="SPREAD")(draw_slide)


def ray_outcome(context: ViewContext, slide_id: str, ref: Any) -> Drawn:
    """A views task's result; a lost task (its node died, twice) is the slide's failure."""
    import ray

    try:
        drawn: Drawn = ray.get(ref)
        return drawn
    except ray.exceptions.RayError as exc:
        return lost_task(context, slide_id, exc), None


def lost_task(context: ViewContext, slide_id: str, exc: BaseException) -> FailureRecord:
    """The failure row of a slide whose views task never came back."""
    model_id = context.model.model_id
    return FailureRecord.from_exception(
        "views",
        slide_id,
        exc,
        source_path=str(context.layout.prediction_store(model_id, slide_id)),
        model_id=model_id,
    )


def _check_against_post(views: SlideViews, post: PostResults) -> None:
    row = post.slide(views.slide_id)
    if row is None or views.n_regions is None:
        return
    if row.get("n_regions") != views.n_regions:
        log.warning(
            "%s: %d regions here, %s in the post tables; give views the post morphology "
            "(min_region_um2 / max_hole_um2) so the outlines match",
            views.slide_id,
            views.n_regions,
            row.get("n_regions"),
        )


# --------------------------------------------------------------------------------------------
# Report inputs


def _report_image(path: Path, width_px: int) -> tuple[str, bytes] | None:
    """A panel PNG shrunk to ``width_px`` and re-encoded as JPEG, to keep the report small."""
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        if image.width > width_px:
            height = max(1, round(image.height * width_px / image.width))
            image = image.resize((width_px, height), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85, optimize=True)
        return "image/jpeg", buffer.getvalue()
    except OSError:
        return None


def _span(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        return {}
    times = [r["written_at"] for r in rows]
    return {
        "runs": sorted({r["run_id"] for r in rows}),
        "engine versions": sorted({r["engine_version"] for r in rows}),
        "written": f"{min(times):%Y-%m-%d %H:%M:%S} – {max(times):%Y-%m-%d %H:%M:%S} UTC",
    }


def _report_inputs(
    layout: FleetLayout, model: _Model, post: PostResults, result: ViewsReport, params: ViewParams
) -> ReportInputs:
    out_dir = result.out_dir
    predictions_dir = layout.predictions_dir / model.model_id
    with_predictions = set(completed_prediction_ids(predictions_dir))
    ingested = (
        {
            p.name.removesuffix(".ome.zarr")
            for p in layout.slides_dir.glob("*.ome.zarr")
            if not p.name.startswith(".") and read_completion(p) is not None
        }
        if layout.slides_dir.is_dir()
        else set()
    )
    drawn = {s.slide_id for s in result.slides}
    post_run = (post.record or {}).get("run_id")

    def resolved(row: dict[str, Any]) -> bool:
        """Whether a later run gave the slide the output this failure stopped."""
        stage, slide_id = row["stage"], row["slide_id"]
        if stage in ("manifest", "ingest"):
            return slide_id in ingested
        if stage == "infer":
            return slide_id in with_predictions
        if stage == "post":
            return post_run is not None and row["run_id"] != post_run
        if stage == "views":
            panel = out_dir / f"{slide_id}_panel.png"
            return slide_id in drawn or (
                panel.exists()
                and dt.datetime.fromtimestamp(panel.stat().st_mtime, dt.UTC) > row["written_at"]
            )
        return False

    failures = read_failure_rows(layout.tables_dir, model.model_id, resolved=resolved)

    slide_files: dict[str, dict[str, str]] = {}
    for slide_id in sorted(with_predictions | {r["slide_id"] for r in post.slides}):
        files = {
            kind: f"{slide_id}{suffix}"
            for kind, suffix in (
                ("panel", "_panel.png"),
                ("heatmap", "_heatmap.png"),
                ("geojson", ".geojson"),
                ("classes", "_classes.png"),
            )
            if (out_dir / f"{slide_id}{suffix}").exists()
        }
        if files:
            slide_files[slide_id] = files

    best, worst = best_and_worst(post.slides, params.report_panels)
    panel_images = {}
    for slide_id in best + worst:
        image = _report_image(out_dir / f"{slide_id}_panel.png", params.report_image_width_px)
        if image is not None:
            panel_images[slide_id] = image

    prediction_attrs = [
        prediction_attributes(predictions_dir / f"{slide_id}.zarr")
        for slide_id in sorted(with_predictions)
    ]
    card = model.card
    first_post = post.slides[0] if post.slides else {}
    run_ids = {a.get("run_id") for a in prediction_attrs} | {r["run_id"] for r in post.slides}
    provenance: dict[str, Any] = {
        "Model": {
            "reference": model.ref,
            "model_id": model.model_id,
            **(
                {
                    "kind": card.kind,
                    "class names": list(card.class_names),
                    "positive class": card.class_names[card.positive_class_index],
                    "mpp (µm/px)": card.mpp,
                    "tile size (px)": card.tile_size_px,
                    "output stride": card.output_stride,
                    "description": card.description,
                    "training data": card.training_data,
                }
                if card is not None
                else {}
            ),
        },
        "Inference": {
            "prediction stores": len(with_predictions),
            "runs": sorted({a["run_id"] for a in prediction_attrs if a.get("run_id")}),
            "engine versions": sorted(
                {a["engine_version"] for a in prediction_attrs if a.get("engine_version")}
            ),
            "score map pixel (µm)": sorted(
                {a["output_px_um"] for a in prediction_attrs if a.get("output_px_um")}
            ),
            "parameters": prediction_attrs[0].get("infer_params") if prediction_attrs else None,
        },
        "Post-processing": {
            "params_hash": post.params_hash,
            "score kind": first_post.get("score_kind"),
            "threshold": first_post.get("threshold"),
            "objective": first_post.get("threshold_objective"),
            "fitted on": post.thresholds[0]["fitted_on"] if post.thresholds else None,
            "calibration slides": (post.record or {}).get("calibration_slide_ids"),
            **_span(post.slides),
            "parameters": post.params or None,
        }
        if post.slides
        else {"status": "post has not run for this model"},
        "Views": {
            "run": result.run_id,
            "engine version": __version__,
            "slides drawn in this run": len(result.slides),
            "failed in this run": len(result.failures),
            "parameters": params.model_dump(mode="json"),
        },
        "Environment": {
            "python": platform.python_version(),
            "platform": platform.platform(terse=True),
            **_versions(),
        },
        "Run records": read_run_records(layout.runs_dir, {r for r in run_ids if r}),
    }
    return ReportInputs(
        model_ref=model.ref,
        model_id=model.model_id,
        generated_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        slides=post.slides,
        cohort=post.cohort,
        thresholds=post.thresholds,
        failures=failures,
        slide_files=slide_files,
        panel_images=panel_images,
        provenance=provenance,
        best_worst=params.report_panels,
    )


def _versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for name in ("numpy", "zarr", "pyarrow", "matplotlib", "pillow", "ray", "dask", "torch"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found
