"""One run, end to end: ingest → infer → post → views for every model of the job.

``score_cohort`` is the Python API behind ``slidefleet run`` and ``jobs/score_cohort.py``. It
records everything in ``ROOT/runs/<run_id>.json`` and remembers the job in ``ROOT/fleet.json`` so
``reprocess`` can later recompute exactly what a new model version or parameter makes stale.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import ConfigError, OutputWriteError
from engine.operate.config import JobConfig, load_job_config
from engine.operate.telemetry import RunRecord
from engine.runs import new_run_id
from engine.store import FleetLayout
from engine.store.atomic import atomic_write_bytes, sweep_stale_files
from engine.tables import FailureRecord, read_table
from engine.views.params import ViewParams

log = logging.getLogger(__name__)

FLEET_FILE = "fleet.json"
RESULT_TABLES = ("slides", "regions", "thresholds", "cohort")


@dataclass
class CohortResult:
    """Tables of one run as Arrow (``.to_pandas()`` for DataFrames) and where its record is."""

    run_id: str
    root: Path
    model_ids: dict[str, str]
    tables: dict[str, pa.Table]
    failures: list[FailureRecord]
    run_record: Path
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    write_errors: list[str] = field(default_factory=list)  # outputs lost to a full disk etc.
    known_failures: dict[str, dict[str, str]] = field(default_factory=dict)
    """stage -> slide_id -> error of a last attempt on the same inputs, not retried this run."""

    def to_pandas(self) -> dict[str, pd.DataFrame]:
        return {name: table.to_pandas() for name, table in self.tables.items()}


def save_fleet_state(layout: FleetLayout, config: JobConfig) -> JobConfig:
    """Remember the job so ``reprocess`` knows the manifest, models and parameters.

    Paths are stored absolute (cron and Ray jobs run from other folders), and ``models`` is
    every model the fleet has run, not only this run's: reprocess keeps all of them current.
    Returns what was stored.
    """
    path = layout.root / FLEET_FILE
    previous = _load(path, layout) if path.exists() else None
    models = list(dict.fromkeys([*(previous.models if previous else []), *config.models]))
    manifest = config.manifest or (previous.manifest if previous else None)
    if manifest is not None:
        manifest = str(Path(manifest).expanduser().resolve())
    stored = config.model_copy(
        update={
            "root": str(layout.root),
            "manifest": manifest,
            "models": models,
            "retry_failed": False,
        }
    )
    atomic_write_bytes(path, json.dumps(stored.model_dump(mode="json"), indent=2).encode())
    return stored


def _load(path: Path, layout: FleetLayout) -> JobConfig:
    job = JobConfig.model_validate_json(path.read_text())
    if job.manifest is not None and not Path(job.manifest).expanduser().is_absolute():
        # Written before paths were stored absolute: relative to the root if it is there.
        beside_root = layout.root / job.manifest
        job = job.model_copy(
            update={
                "manifest": str(
                    beside_root if beside_root.exists() else Path(job.manifest).resolve()
                )
            }
        )
    return job.model_copy(update={"root": str(layout.root)})


def load_fleet_state(layout: FleetLayout) -> JobConfig:
    path = layout.root / FLEET_FILE
    if not path.exists():
        raise ConfigError(f"{layout.root} has no {FLEET_FILE}: run `slidefleet run` on it first.")
    return _load(path, layout)


def _tables_for(
    layout: FleetLayout,
    model_ids: Sequence[str],
    *,
    post_params_hash: str | None = None,
    run_id: str | None = None,
) -> dict[str, pa.Table]:
    """The current result tables: these models, and only rows of the current post parameters.

    Parts of earlier post parameters stay on disk (they are results of their own), but a run's
    tables and summary show what its parameters produce. ``failures`` holds this run's rows.
    """
    tables: dict[str, pa.Table] = {}
    for name in RESULT_TABLES:
        table = read_table(layout.tables_dir, name)
        if table.num_rows and "model_id" in table.column_names:
            table = table.filter(
                pc.is_in(table["model_id"], pa.array(list(model_ids), pa.string()))
            )
        if post_params_hash is not None and table.num_rows and "params_hash" in table.column_names:
            table = table.filter(pc.equal(table["params_hash"], post_params_hash))
        tables[name] = table
    failures = read_table(layout.tables_dir, "failures")
    if run_id is not None and failures.num_rows:
        failures = failures.filter(pc.equal(failures["run_id"], run_id))
    tables["failures"] = failures
    return tables


VIEWS_RECORD = "_views.json"


def views_key(post_run_id: str | None, post_params_hash: str, view: ViewParams) -> dict[str, Any]:
    """What a model's views are drawn from: the post run (its inputs and parameters) and ``view``."""
    return {
        "post_run_id": post_run_id,
        "post_params_hash": post_params_hash,
        "view_params": view.model_dump(mode="json"),
    }


def views_are_current(layout: FleetLayout, model_id: str, key: dict[str, Any]) -> bool:
    directory = layout.views_dir / model_id
    try:
        record = json.loads((directory / VIEWS_RECORD).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return record == json.loads(json.dumps(key)) and (directory / "report.html").exists()


def record_views(layout: FleetLayout, model_id: str, key: dict[str, Any]) -> None:
    atomic_write_bytes(
        layout.views_dir / model_id / VIEWS_RECORD, json.dumps(key, indent=2).encode()
    )


def job_manifest(config: JobConfig) -> Path:
    """The job's manifest, or a ``ConfigError`` saying where to give one."""
    if config.manifest is None:
        raise ConfigError(
            "the job has no manifest: give one on the command line or in the config file."
        )
    return Path(config.manifest)


def ingest_stage(
    config: JobConfig, root: Path, *, run_id: str, record: RunRecord, progress: bool, **options: Any
) -> Any:
    """Ingest the job's manifest with its parameters and record the stage; the report.

    ``options``: what the run adds (``slide_ids``, or a streaming run's ordering and hand-over).
    """
    from engine.ingest import ingest

    started = time.perf_counter()
    report = ingest(
        job_manifest(config),
        root,
        params=config.ingest,
        address=config.address,
        progress=progress,
        run_id=run_id,
        retry_failed=config.retry_failed,
        **options,
    )
    record_ingest(record, report, time.perf_counter() - started)
    return report


def record_ingest(record: RunRecord, report: Any, seconds: float) -> None:
    """The ingest stage and per-slide telemetry in the run record."""
    megapixels = sum(r.width_px * r.height_px for r in report.converted) / 1e6
    record.stage(
        "ingest",
        seconds=seconds,
        converted=len(report.converted),
        skipped=len(report.skipped),
        failed=len(report.failures),
        not_retried=len(report.known_failures),
        megapixels=megapixels,
        megapixels_per_s=megapixels / seconds if seconds else None,
    )
    for result in report.results:
        record.slide(
            result.slide_id,
            "ingest",
            seconds=result.seconds,
            skipped=result.skipped,
            megapixels=result.width_px * result.height_px / 1e6,
            cpu_seconds=result.cpu_seconds,
            peak_rss_mib=result.peak_rss_mib,
        )
    if report.known_failures:
        record.not_retried["ingest"] = dict(report.known_failures)


def record_infer(record: RunRecord, ref: str, model_id: str, inferred: Any, seconds: float) -> None:
    """One model's infer stage and per-slide telemetry in the run record."""
    record.stage(
        f"infer:{ref}",
        seconds=seconds,
        tiles=inferred.tiles,
        tiles_per_s=inferred.tiles_per_second,
        steady_tiles_per_s=inferred.steady_tiles_per_second,
        scored=len(inferred.scored),
        skipped=len(inferred.skipped),
        failed=len(inferred.failures),
        not_retried=len(inferred.known_failures),
        actors=inferred.actors,
        model_id=model_id,
        device=inferred.device,
        actors_wanted=inferred.actors_wanted,
        actors_joined_late=inferred.actors_joined_late,
        scale_up_wait_s=inferred.scale_up_wait_s,
        first_tile_s=inferred.first_tile_s,
        cpu_threads_after_ingest=inferred.cpu_threads_after_ingest,
    )
    for scored in inferred.scored:
        io_and_compute = scored["read_seconds"] + scored["model_seconds"]
        record.slide(
            scored["slide_id"],
            f"infer:{ref}",
            seconds=scored["seconds"],
            tiles=scored["tiles"],
            tiles_per_s=scored["tiles"] / scored["seconds"] if scored["seconds"] else None,
            read_seconds=scored["read_seconds"],
            model_seconds=scored["model_seconds"],
            io_fraction=scored["read_seconds"] / io_and_compute if io_and_compute else None,
        )
    if inferred.known_failures:
        record.not_retried[f"infer:{ref}"] = dict(inferred.known_failures)


def record_post(record: RunRecord, ref: str, posted: Any, seconds: float) -> None:
    record.stage(
        f"post:{ref}",
        seconds=seconds,
        slides=posted.tables["slides"].num_rows,
        failed=len(posted.failures),
        reused=posted.reused,
        threshold=posted.threshold,
        threshold_objective=posted.threshold_objective,
        threshold_source=posted.threshold_source,
    )


def views_stage(
    config: JobConfig,
    root: Path,
    ref: str,
    model_id: str,
    posted: Any,
    record: RunRecord,
    run_id: str,
    drawn: Sequence[Any] = (),
) -> list[FailureRecord]:
    """Render a model's views unless those of the same post run and view parameters exist.

    ``drawn``: slides a streaming run has drawn already (:class:`engine.views.stream.ViewStream`).
    """
    from engine.views import render_views

    if not config.views:
        return []
    layout = FleetLayout(root)
    key = views_key(posted.run_id, posted.params_hash, config.view)
    if views_are_current(layout, model_id, key):
        record.stage(f"views:{ref}", seconds=0.0, written=0, failed=0, up_to_date=True)
        return []
    started = time.perf_counter()
    viewed = render_views(root, ref, params=config.view, run_id=run_id, drawn=drawn)
    record.stage(
        f"views:{ref}",
        seconds=time.perf_counter() - started,
        drawn_while_streaming=viewed.streamed,
        written=len(viewed.paths),
        failed=len(viewed.failures),
        write_errors=viewed.write_errors,
    )
    if not viewed.failures and not viewed.write_errors:
        record_views(layout, model_id, key)
    return list(viewed.failures)


def run_stages(
    config: JobConfig,
    *,
    run_id: str,
    record: RunRecord,
    progress: bool,
    ingest_slide_ids: Sequence[str] | None = None,
    infer_slide_ids: dict[str, Sequence[str]] | None = None,
    post_models: Sequence[str] | None = None,
    skip_ingest: bool = False,
) -> tuple[dict[str, str], list[FailureRecord]]:
    """Run the stages the plan asks for, one after another; {model ref: model_id}, failures."""
    from engine.infer import infer
    from engine.models import ModelRegistry, make_demo_models
    from engine.post import post

    assert config.root is not None
    root = Path(config.root)
    failures: list[FailureRecord] = []
    if not skip_ingest:
        report = ingest_stage(
            config,
            root,
            run_id=run_id,
            record=record,
            progress=progress,
            slide_ids=ingest_slide_ids,
        )
        failures += report.failures

    excluded = _qc_stage(
        config,
        root,
        run_id=run_id,
        record=record,
        progress=progress,
        failures=failures,
        skip_ingest=skip_ingest,
    )

    if config.demo_models:
        make_demo_models(root)
    registry = ModelRegistry(root)
    model_ids: dict[str, str] = {}
    for ref in config.models:
        registered = registry.resolve(ref)
        model_ids[registered.ref] = registered.model_id
        slide_ids = None if infer_slide_ids is None else infer_slide_ids.get(ref, [])
        slide_ids = _without_excluded(root, slide_ids, excluded)
        if slide_ids is None or slide_ids:
            started = time.perf_counter()
            inferred = infer(
                root,
                registered.ref,
                params=config.infer,
                address=config.address,
                slide_ids=slide_ids,
                progress=progress,
                run_id=run_id,
                retry_failed=config.retry_failed,
            )
            record_infer(
                record, registered.ref, registered.model_id, inferred, time.perf_counter() - started
            )
            failures += inferred.failures
        if post_models is None or registered.ref in post_models:
            started = time.perf_counter()
            posted = post(
                root,
                registered.ref,
                params=config.post,
                dask_address=config.dask_address,
                progress=progress,
                run_id=run_id,
            )
            record_post(record, registered.ref, posted, time.perf_counter() - started)
            failures += posted.failures
            failures += views_stage(
                config, root, registered.ref, registered.model_id, posted, record, run_id
            )
    return model_ids, failures


def _qc_stage(
    config: JobConfig,
    root: Path,
    *,
    run_id: str,
    record: RunRecord,
    progress: bool,
    failures: list[FailureRecord],
    skip_ingest: bool,
) -> set[str]:
    """QC every ingested slide (when ``qc.enabled``); return the slides ``qc.exclude`` gates out.

    The gate is the latest QC verdict of each slide (``tables/qc``): a slide this run's QC
    excludes is skipped by infer (its QC failures row says why) and left out by post. With
    ``qc.enabled`` false, or when ingest did not run and every slide already has a verdict under
    these QC parameters (a reprocess of post only), the latest verdicts hold.
    """
    from engine.qc.gate import excluded_slides
    from engine.qc.stage import qc, qc_is_current

    tables_dir = FleetLayout(root).tables_dir
    if not config.qc.enabled or (
        skip_ingest and qc_is_current(root, config.qc, config.ingest.class_map)
    ):
        return set(excluded_slides(tables_dir))  # the latest verdicts hold
    started = time.perf_counter()
    report = qc(
        root,
        params=config.qc,
        class_map=config.ingest.class_map,
        address=config.address,
        progress=progress,
        run_id=run_id,
    )
    seconds = time.perf_counter() - started
    record.stage(
        "qc",
        seconds=seconds,
        measured=len(report.rows),
        flagged=len(report.flagged),
        excluded=len(report.excluded),
        failed=len(report.failures) - len(report.excluded),
        seconds_per_slide=seconds / len(report.rows) if report.rows else None,
    )
    for row in report.rows:
        record.slide(
            row["slide_id"],
            "qc",
            seconds=row["seconds"],
            flags=row["flags"],
            excluded=row["excluded"],
        )
    failures += report.failures
    return set(excluded_slides(tables_dir))


def _without_excluded(
    root: Path, slide_ids: Sequence[str] | None, excluded: set[str]
) -> list[str] | None:
    from engine.qc.gate import without_excluded

    return without_excluded(root, slide_ids, excluded)


def _refuse_extractors(job: JobConfig) -> None:
    """A run posts score maps; an embedding extractor writes features, which post cannot read.
    Say so before any slide is converted."""
    from engine.errors import ModelError
    from engine.models import ModelRegistry
    from engine.models.demo import DEMO_EXTRACTOR_NAMES

    assert job.root is not None
    registry = ModelRegistry(Path(job.root))
    for ref in job.models:
        try:
            extractor = registry.resolve(ref).card.is_extractor
        except ModelError:  # not registered yet: a demo model to be made, or infer says so
            extractor = job.demo_models and ref.partition(":")[0] in DEMO_EXTRACTOR_NAMES
        if extractor:
            raise ConfigError(
                f"{ref} is an embedding_extractor: it writes features, not score maps, so `run` "
                f"cannot post-process it. Extract features with `slidefleet infer --model {ref}` "
                "(after `slidefleet ingest`), then `slidefleet tiles` or `slidefleet mil train`."
            )


def score_cohort(
    manifest: Path | str | None = None,
    model: str | Sequence[str] | None = None,
    *,
    root: Path | str | None = None,
    config: JobConfig | Path | str | None = None,
    address: str | None = None,
    progress: bool = True,
    run_id: str | None = None,
) -> CohortResult:
    """Ingest, score, post-process and render a cohort in one call; returns the tables.

    ``config`` is a :class:`JobConfig` or a job-config file; explicit arguments override it.
    """
    models = [model] if isinstance(model, str) else (list(model) if model else None)
    overrides: dict[str, Any] = {
        "manifest": str(manifest) if manifest else None,
        "root": str(root) if root else None,
        "models": models,
        "address": address,
    }
    if isinstance(config, JobConfig):
        job = config.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    else:
        job = load_job_config(config, overrides)
    if job.root is None or not job.models:
        raise ConfigError(
            "score_cohort needs a root and at least one model (argument or config file)."
        )
    layout = FleetLayout(Path(job.root))
    _refuse_extractors(job)
    run_id = run_id or new_run_id()
    record = RunRecord(run_id=run_id, config=job.model_dump(mode="json"))
    for stale in sweep_stale_files(stale_file_dirs(layout)):
        log.warning("removed %s left by an interrupted or failed write", stale)
    try:
        if job.stream and not (
            job.qc.enabled and job.qc.exclude
        ):  # a QC gate needs the whole cohort first
            from engine.operate.stream import run_streaming

            model_ids, failures = run_streaming(
                job, run_id=run_id, record=record, progress=progress
            )
        else:
            model_ids, failures = run_stages(job, run_id=run_id, record=record, progress=progress)
    except OutputWriteError as exc:
        write_run_record_after(record, layout, exc)
        raise
    save_fleet_state(layout, job)
    return finish_run(layout, job, record, model_ids, failures)


def finish_run(
    layout: FleetLayout,
    job: JobConfig,
    record: RunRecord,
    model_ids: dict[str, str],
    failures: list[FailureRecord],
) -> CohortResult:
    """Write the run record and gather the run's current tables."""
    record.failures = [f.__dict__ for f in failures]
    path = record.write(layout.runs_dir)
    tables = _tables_for(
        layout,
        list(model_ids.values()),
        post_params_hash=job.post.output_hash(),
        run_id=record.run_id,
    )
    return CohortResult(
        run_id=record.run_id,
        root=layout.root,
        model_ids=model_ids,
        tables=tables,
        failures=failures,
        run_record=path,
        stages=record.stages,
        known_failures=record.not_retried,
        write_errors=write_errors_of(record),
    )


def stale_file_dirs(layout: FleetLayout) -> list[Path]:
    """Where atomic writes leave hidden temporaries when killed: swept at the start of a run."""
    return [
        layout.root,
        layout.runs_dir,
        layout.tables_dir,
        layout.views_dir,
        layout.hash_cache.parent,
    ]


def write_errors_of(record: RunRecord) -> list[str]:
    """Every output a stage could not write (views report them instead of failing the run)."""
    return [e for values in record.stages.values() for e in values.get("write_errors", [])]


def write_run_record_after(record: RunRecord, layout: FleetLayout, error: OutputWriteError) -> None:
    """Record a run stopped by an output that cannot be written; best effort, the disk may be full."""
    record.stage("stopped", error_type=type(error).__name__, message=str(error))
    try:
        record.write(layout.runs_dir)
    except OSError:
        log.error(
            "the run record of %s could not be written either (%s)", record.run_id, layout.runs_dir
        )
