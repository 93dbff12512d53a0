"""The streaming run: ingest, infer and post overlap, slide by slide.

::

    ingest (Ray tasks, calibration slides first, ≤ N in flight)
       │ each committed store ──► SlideFeed (bounded) ──► infer driver thread per model
       │                                                   (one actor pool, alive the whole run)
       │                                  each committed prediction ──► PostStream per model
       ▼                                                   (fit once calibration is in, then
    views and the cohort tables when the last slide is done  each slide's pass at once)

QC with ``qc.exclude`` gates slides out of inference on cohort-wide flags, so it needs every
slide ingested before the first is scored: such a job runs stage after stage
(:func:`engine.operate.pipeline.run_stages`). QC that only reports runs while the actors score.

A slide that fails anywhere is told downstream as ``gone`` and the stream goes on without it.
Backpressure: ingest blocks while a model's feed holds ``stream_queue`` stores, so memory and
disk in flight stay flat whatever the cohort size. CPUs are split so ingest tasks and scoring
actors never starve each other: ingest gets half the cluster's CPUs (at least one), CPU actors of
all models share the rest; GPU actors (GPU nodes, or nodes the autoscaler adds) are not capped.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.operate.config import JobConfig
from engine.operate.pipeline import (
    _qc_stage,
    ingest_stage,
    job_manifest,
    record_infer,
    record_post,
    views_stage,
)
from engine.operate.telemetry import RunRecord
from engine.store import FleetLayout
from engine.tables import FailureRecord

log = logging.getLogger(__name__)


@dataclass
class _ModelStream:
    ref: str
    model_id: str
    feed: Any
    post: Any
    views: Any = None  # ViewStream, when the run draws views
    thread: threading.Thread | None = None
    report: Any = None
    error: BaseException | None = None
    fed: set[str] = field(default_factory=set)
    first_prediction_s: float | None = None


def split_cpus(total_cpus: float, n_models: int, cpus_per_actor: float) -> tuple[int, int, float]:
    """(ingest tasks at once, actors per model, CPUs per actor) for one streaming run.

    Ingest keeps at least one CPU; the actors of every model share the rest, one CPU-share each
    at the least (fractional when there are fewer CPUs than models).
    """
    if total_cpus < 2:
        raise ConfigError(
            f"a streaming run needs at least 2 CPUs (the cluster has {total_cpus:g}); "
            "set stream: false to run the stages one after another."
        )
    ingest_cpus = max(1, int(total_cpus // 2))
    left = total_cpus - ingest_cpus
    per_model = left / n_models
    if per_model >= cpus_per_actor:
        return ingest_cpus, max(1, int(per_model // cpus_per_actor)), cpus_per_actor
    return ingest_cpus, 1, per_model


def run_streaming(
    config: JobConfig, *, run_id: str, record: RunRecord, progress: bool
) -> tuple[dict[str, str], list[FailureRecord]]:
    """Ingest → infer → post → views overlapped; {model ref: model_id} and all failures."""
    import ray

    from engine.cluster import ensure_ray
    from engine.infer import infer
    from engine.infer.driver import CpuShare
    from engine.infer.feed import SlideFeed
    from engine.manifest import read_manifest
    from engine.models import ModelRegistry, make_demo_models
    from engine.post.stream import PostStream
    from engine.views.stream import ViewStream

    assert config.root is not None
    manifest = job_manifest(config)
    origin = time.perf_counter()
    root = Path(config.root)
    layout = FleetLayout(root)
    if config.demo_models:
        make_demo_models(root)
    registry = ModelRegistry(root)
    models = [registry.resolve(ref) for ref in config.models]
    entries = read_manifest(manifest).entries
    calibration = {e.slide_id for e in entries if e.split == config.post.calibration_split}

    ensure_ray(config.address)
    total_cpus = float(ray.cluster_resources().get("CPU", 1.0))
    ingest_cpus, actors_per_model, cpus_per_actor = split_cpus(
        total_cpus, len(models), config.infer.cpus_per_actor
    )
    max_actors = (
        actors_per_model
        if config.infer.max_actors is None
        else min(actors_per_model, config.infer.max_actors)
    )
    if sum(1 for node in ray.nodes() if node.get("Alive")) == 1:
        # One machine: every CPU converts. Its actors reserve only a token CPU (infer, on a single
        # node) and run one model thread until ingest is done, so no reserved CPU idles while they
        # wait for stores (measured: ingest halved at 100 slides made the stream 1.32x the stages' sum).
        ingest_cpus = max(1, int(total_cpus))
    # CPU actors share the CPUs ingest does not use; GPU actors live on GPU nodes and are not capped.
    cpu_share = CpuShare(
        max_actors,
        cpus_per_actor,
        threads_after_ingest=max(1, int(total_cpus // (max_actors * len(models)))),
    )
    record.stage(
        "stream",
        ingest_tasks=ingest_cpus,
        actors_per_model=max_actors,
        cpus_per_actor=cpus_per_actor,
        queue=config.stream_queue,
        cluster_cpus=total_cpus,
    )

    # Views: on one machine a token CPU per slide drawn (they share the cores with ingest through
    # the OS instead of waiting for every conversion to end: measured, one reserved CPU at a time
    # made 100 slides' streamed run 1.4x slower), at most as many at once as cores (4 at the
    # most: each task's worker holds the model for explanations); on a cluster a CPU each, over
    # half the cluster's CPUs. Shared between the models.
    single_node = sum(1 for node in ray.nodes() if node.get("Alive")) == 1
    views_cpus = 0.01 if single_node else 1.0
    views_slots = min(int(total_cpus), 4) if single_node else int(total_cpus // 2)
    views_in_flight = max(1, views_slots // len(models))
    streams: dict[str, _ModelStream] = {}
    for registered in models:
        views = (
            ViewStream(
                root,
                registered.ref,
                params=config.view,
                post_params=config.post,
                max_in_flight=views_in_flight,
                cpus_per_task=views_cpus,
                clock_origin=origin,
            )
            if config.views
            else None
        )
        streams[registered.ref] = _ModelStream(
            registered.ref,
            registered.model_id,
            SlideFeed(config.stream_queue),
            PostStream(
                root,
                registered.ref,
                params=config.post,
                run_id=run_id,
                expected_calibration=calibration,
                clock_origin=origin,
                fit_expected=any(e.split for e in entries) or None,
                on_slide=views.posted if views is not None else None,
            ),
            views,
        )

    def infer_thread(stream: _ModelStream) -> None:
        def on_slide(slide_id: str, outcome: str) -> None:
            record.slide(
                slide_id,
                f"stream:{stream.ref}",
                infer_outcome=outcome,
                infer_done_at_s=time.perf_counter() - origin,
            )
            if outcome == "committed":
                stream.first_prediction_s = (
                    stream.first_prediction_s or time.perf_counter() - origin
                )
                stream.post.committed(slide_id)
            else:
                stream.post.gone(slide_id)

        started = time.perf_counter()
        try:
            stream.report = infer(
                root,
                stream.ref,
                params=config.infer,
                address=config.address,
                progress=False,
                run_id=run_id,
                retry_failed=config.retry_failed,
                feed=stream.feed,
                on_slide=on_slide,
                cpu_share=cpu_share,
            )
            record_infer(
                record, stream.ref, stream.model_id, stream.report, time.perf_counter() - started
            )
        except BaseException as exc:  # noqa: BLE001 - re-raised by the main thread
            stream.error = exc
            stream.feed.abandon()

    for stream in streams.values():
        stream.thread = threading.Thread(
            target=infer_thread, args=(stream,), name=f"infer-{stream.ref}", daemon=True
        )
        stream.thread.start()

    def hand_over(slide_id: str) -> None:
        for stream in streams.values():
            if slide_id not in stream.fed:
                stream.fed.add(slide_id)
                stream.feed.put(layout.slide_store(slide_id))

    order: list[str] = []

    def on_ingested(slide_id: str, outcome: str) -> None:
        order.append(slide_id)
        record.slide(
            slide_id, "stream", ingested_at_s=time.perf_counter() - origin, ingest_outcome=outcome
        )
        if outcome in ("converted", "skipped"):
            hand_over(slide_id)
        else:
            for stream in streams.values():
                stream.post.gone(slide_id)

    failures: list[FailureRecord] = []
    model_ids: dict[str, str] = {}
    first_rows: list[float] = []
    try:
        try:
            report = ingest_stage(
                config,
                root,
                run_id=run_id,
                record=record,
                progress=progress,
                first_split=config.post.calibration_split,
                max_in_flight=ingest_cpus,
                on_slide=on_ingested,
            )
            failures += report.failures
            # Stores from earlier manifests are scored too, as a staged run would.
            if layout.slides_dir.is_dir():
                for path in sorted(layout.slides_dir.glob("*.ome.zarr")):
                    if not path.name.startswith("."):
                        hand_over(path.name.removesuffix(".ome.zarr"))
        finally:
            for stream in streams.values():
                stream.feed.close()
        try:
            # QC that reports but never gates (qc.exclude empty) runs while the actors score.
            _qc_stage(
                config,
                root,
                run_id=run_id,
                record=record,
                progress=progress,
                failures=failures,
                skip_ingest=False,
            )
        finally:
            for stream in streams.values():
                assert stream.thread is not None
                stream.thread.join()
        for stream in streams.values():
            if stream.error is not None:
                raise stream.error
            failures += stream.report.failures

        for stream in streams.values():
            model_ids[stream.ref] = stream.model_id
            started = time.perf_counter()
            posted = stream.post.finish()
            record_post(record, stream.ref, posted, time.perf_counter() - started)
            drawn = stream.views.finish() if stream.views is not None else []
            record.stage(
                f"post:{stream.ref}",
                first_slide_row_s=stream.post.first_result_s,
                fit_at_s=stream.post.fit_s,
                first_prediction_s=stream.first_prediction_s,
                first_slide_views_s=stream.views.first_view_s if stream.views is not None else None,
            )
            failures += posted.failures
            failures += views_stage(
                config, root, stream.ref, stream.model_id, posted, record, run_id, drawn=drawn
            )
            if stream.post.first_result_s is not None:
                first_rows.append(stream.post.first_result_s)
    except BaseException:
        for stream in streams.values():  # no views task keeps writing for a failed run
            if stream.views is not None:
                stream.views.abandon()
        raise
    record.stage(
        "stream",
        makespan_s=time.perf_counter() - origin,
        ingest_order=order,
        first_slide_row_s=min(first_rows) if first_rows else None,
        first_slide_views_s=min(
            (
                s.views.first_view_s
                for s in streams.values()
                if s.views is not None and s.views.first_view_s is not None
            ),
            default=None,
        ),
        first_prediction_s=min(
            (s.first_prediction_s for s in streams.values() if s.first_prediction_s is not None),
            default=None,
        ),
    )
    return model_ids, failures


__all__ = ["run_streaming", "split_cpus"]
