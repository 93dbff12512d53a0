"""Score a cohort: plan tissue tiles per slide, stream work units to actors, commit each slide.

Backpressure: at most ``in_flight_per_actor`` units are queued per actor, so memory depends on
unit size and actor count, never on the cohort. Failures are data: a slide whose model output is
invalid becomes a failures row and the others go on; a dead actor is restarted by Ray and its
units retried (a unit rewrites only its own chunk, so a retry can neither duplicate nor lose a
tile); an actor dead for good is replaced, and a node lost mid-run costs only its in-flight units.

Placement (``engine.infer.placement``, ``engine.infer.pool``): GPU or CPU actors by
``infer.device``, the wanted actor count asked of the autoscaler, units only to placed actors,
late actors joining while the run goes on. Slides are planned a window at a time, so the driver
never holds the cohort's tiles.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from tqdm.auto import tqdm

from engine import __version__
from engine.cluster import ensure_ray
from engine.errors import NoTissue, PlacementTimeout, SlideFleetError, StoreIncomplete, WorkerDied
from engine.features.commit import commit_features
from engine.features.store import features_key, open_or_create_feature_partial
from engine.infer.actor import ScoringActor, UnitJob, UnitStats
from engine.infer.coverage import check_materialised
from engine.infer.feed import SlideFeed
from engine.infer.params import InferParams
from engine.infer.placement import (
    actor_demand,
    choose_device,
    missing_resources,
    request_demand,
    withdraw_demand,
)
from engine.infer.plan import TileGeometry, WorkUnit, plan_units, tissue_tiles
from engine.infer.pool import ActorPool
from engine.infer.prediction_store import (
    finalise,
    is_complete,
    open_or_create_partial,
    record_unit_done,
)
from engine.infer.reading import model_frame, slide_tile_geometry, store_tissue
from engine.models import ModelRegistry, RegisteredModel
from engine.runs import new_run_id
from engine.store import FleetLayout, read_completion
from engine.store.failed import clear_failure, failed_before, failure_marker, record_failure
from engine.store.slide_store import SlideStore
from engine.tables import FailureRecord, read_table, write_failures, write_table_part
from engine.tables.current import merge_run_parts

log = logging.getLogger(__name__)

PREDICTION_FORMAT_VERSION = 2  # 2: footprint tile selection, tiles read on physical centres
INFERRED_COLUMNS = (
    "slide_id",
    "model_id",
    "model",
    "tiles",
    "units",
    "seconds",
    "read_seconds",
    "model_seconds",
    "unit_retries",
)


@dataclass
class SlideJob:
    store: SlideStore
    final_path: Path
    partial_path: Path
    key: dict[str, Any]
    geometry: TileGeometry
    units_total: int
    tiles_total: int
    units_done: int = 0
    tiles_done: int = 0
    in_flight: int = 0
    failed: bool = False
    started: float | None = None
    read_seconds: float = 0.0
    model_seconds: float = 0.0
    retries: int = 0
    unit_keys: list[str] = field(default_factory=list)

    @property
    def slide_id(self) -> str:
        return self.store.slide_id


@dataclass
class InferReport:
    run_id: str
    model: RegisteredModel
    scored: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[FailureRecord] = field(default_factory=list)
    known_failures: dict[str, str] = field(default_factory=dict)
    """slide_id -> error of its last attempt on the same inputs (not retried)."""
    actors: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    tiles: int = 0
    unit_retries: int = 0
    actor_replacements: int = 0
    scoring_seconds: float = 0.0  # first unit dispatched -> last unit done (no start-up)
    device: dict[str, Any] = field(default_factory=dict)  # DeviceChoice: device, reason, ...
    actors_wanted: int = 0
    actors_joined_late: int = 0  # placed after scoring began (late GPU nodes)
    scale_up_wait_s: float | None = None  # actors created -> first one placed
    cpu_threads_after_ingest: int | None = None  # CPU actors' model threads once ingest was done
    first_tile_s: float | None = None  # infer called -> first unit scored
    first_commit_s: float | None = None  # infer called -> first prediction committed

    @property
    def tiles_per_second(self) -> float:
        return self.tiles / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_tiles_per_second(self) -> float:
        return self.tiles / self.scoring_seconds if self.scoring_seconds > 0 else 0.0


def prediction_key(
    store: SlideStore, model: RegisteredModel, params: InferParams
) -> dict[str, Any]:
    return {
        "slide_sha256": store.source_sha256,
        "slide_params_hash": store.record.get("input_key", {}).get("params_hash"),
        "model_id": model.model_id,
        "infer_params_hash": params.output_hash(),
        "format": PREDICTION_FORMAT_VERSION,
    }


def _plan_slide(
    store: SlideStore, model: RegisteredModel, params: InferParams
) -> tuple[TileGeometry, list[WorkUnit]]:
    card = model.card
    _frame, geometry = slide_tile_geometry(
        store, card, mpp_tolerance=params.mpp_tolerance, unit_tiles=params.unit_tiles
    )
    tissue_level, tissue = store_tissue(store)
    selected = tissue_tiles(
        geometry,
        tissue,
        tissue_scale_y_um=tissue_level.scale_y_um,
        tissue_scale_x_um=tissue_level.scale_x_um,
        tissue_translation_y_um=tissue_level.translation_y_um,
        tissue_translation_x_um=tissue_level.translation_x_um,
        mpp_x=store.mpp_x,
        mpp_y=store.mpp_y,
    )
    reads = [(card.mpp, card.tile_size_px)]
    if params.fusion is not None:
        reads.append((card.mpp * params.fusion.mpp_factor, card.tile_size_px))
    check_materialised(store, geometry, selected, model_name=model.ref, reads=reads)
    return geometry, plan_units(store.slide_id, geometry, selected)


def _inferred_row(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k in INFERRED_COLUMNS}


def record_committed_predictions(layout: FleetLayout, model_id: str, *, run_id: str) -> int:
    """Give every committed prediction of ``model_id`` its ``inferred`` row if it has none.

    A run killed between a commit and its table write (or before the table existed) left
    predictions without rows; their completion records hold the row. Returns rows written.
    """
    directory = layout.predictions_dir / model_id
    if not directory.is_dir():
        return 0
    table = read_table(layout.tables_dir, "inferred")
    have: set[tuple[str, str]] = set()
    if table.num_rows:
        for row in table.select(["slide_id", "model_id", "run_id"]).to_pylist():
            if row["model_id"] == model_id:
                have.add((row["slide_id"], row["run_id"]))
    rows = []
    for path in sorted(directory.glob("*.zarr")):
        if path.name.startswith("."):
            continue
        record = read_completion(path)
        if record is None or not isinstance(record.get("result"), dict):
            continue
        committed_by = record.get("run_id") or "unknown"
        result = record["result"]
        if (result.get("slide_id"), committed_by) not in have:
            rows.append({**_inferred_row(result), "run_id": committed_by})
    write_table_part(
        layout.tables_dir, "inferred", rows, partition={"model_id": model_id}, run_id=run_id
    )
    return len(rows)


def _list_slide_stores(layout: FleetLayout, slide_ids: Sequence[str] | None) -> list[Path]:
    if slide_ids is not None:
        return [layout.slide_store(s) for s in slide_ids]
    if not layout.slides_dir.exists():
        return []
    return sorted(p for p in layout.slides_dir.glob("*.ome.zarr") if not p.name.startswith("."))


ACTOR_TOKEN_CPU = 0.01
"""The Ray CPUs a scoring actor reserves beside a streaming ingest on one node (see CpuShare)."""


@dataclass(frozen=True)
class CpuShare:
    """The CPUs a streaming run leaves to one model's scoring while ingest runs beside it.

    At most ``max_actors`` actors of ``cpus_per_actor`` CPUs each. Once ingest has handed over its
    last slide its CPUs are idle, so CPU actors on that one node then run the model on
    ``threads_after_ingest`` threads each (the node's CPUs shared among every model's actors).
    """

    max_actors: int
    cpus_per_actor: float
    threads_after_ingest: int


def infer(
    root: Path | str,
    model: str,
    *,
    slide_ids: Sequence[str] | None = None,
    params: InferParams | None = None,
    address: str | None = None,
    progress: bool = True,
    run_id: str | None = None,
    on_unit_done: Callable[[UnitStats, list[Any]], None] | None = None,
    retry_failed: bool = True,
    feed: SlideFeed | None = None,
    on_slide: Callable[[str, str], None] | None = None,
    cpu_share: CpuShare | None = None,
) -> InferReport:
    """Score every ingested slide (or ``slide_ids``) with ``model`` (``name[:version]``).

    Results go to ``root/predictions/<model_id>/<slide_id>.zarr``; slides whose prediction is
    complete for the same slide content, model_id and parameters are skipped.
    ``on_unit_done(stats, actors)`` is called after each unit (progress hooks, fault tests).
    A slide that fails leaves a marker with its prediction key; with ``retry_failed=False`` a
    slide whose last attempt failed on the same key is not tried again (``known_failures``).
    Each commit writes its ``inferred`` row at once, so a killed run's commits are recorded.

    Slides are planned as the actors need work (a window of a few units per actor), so the driver
    holds only the slides being scored, never the cohort's tiles. GPU or CPU actors follow
    ``params.device`` (:func:`engine.infer.placement.choose_device`); the wanted actors are asked of
    the autoscaler and join the pool as they are placed.

    Streaming: with ``feed`` the slides come from it as ingest commits them (``slide_ids`` is
    ignored); the actors start at once and stay up until the feed is closed and drained.
    ``on_slide(slide_id, outcome)`` is told each slide's outcome as it happens: ``committed``,
    ``skipped`` (already complete), ``not_retried`` or ``failed``. ``cpu_share`` (:class:`CpuShare`)
    caps CPU actors, and GPU actors on a single-node Ray, so a streaming run leaves CPUs to ingest;
    GPU actors on a cluster's GPU nodes (or asked of the autoscaler) are not capped by it. CPU
    actors widen to ``cpu_share.threads_after_ingest`` model threads once the feed is exhausted.
    """
    params = params or InferParams()
    layout = FleetLayout(Path(root))
    registered = ModelRegistry(layout.root).resolve(model)
    report = InferReport(run_id=run_id or new_run_id(), model=registered)
    started = time.perf_counter()
    channel_names = list(registered.card.class_names)
    extractor = registered.card.is_extractor  # writes features/<model_id>/, not a score map
    paths = deque([] if feed is not None else _list_slide_stores(layout, slide_ids))
    queue: deque[tuple[SlideJob, WorkUnit]] = deque()
    record_committed_predictions(layout, registered.model_id, run_id=report.run_id)
    failed_jobs: list[SlideJob] = []

    def tell(slide_id: str, outcome: str) -> None:
        if on_slide is not None:
            on_slide(slide_id, outcome)

    def commit_if_done(job: SlideJob) -> None:
        if job.failed or job.units_done < job.units_total:
            return
        seconds = time.perf_counter() - (job.started or time.perf_counter())
        result = {
            "slide_id": job.slide_id,
            "model_id": registered.model_id,
            "model": registered.ref,
            "tiles": job.tiles_total,
            "units": job.units_total,
            "seconds": seconds,
            "read_seconds": job.read_seconds,
            "model_seconds": job.model_seconds,
            "unit_retries": job.retries,
        }
        if extractor:
            commit_features(
                job.store,
                job.partial_path,
                job.final_path,
                job.key,
                job.geometry,
                job.unit_keys,
                dtype=params.feature_dtype,
                result=result,
                attributes={
                    "slide_id": job.slide_id,
                    "model_id": registered.model_id,
                    "model": registered.ref,
                    "kind": registered.card.kind,
                    "slide_store": str(job.store.path),
                    "infer_params": params.model_dump(mode="json"),
                    "engine_version": __version__,
                    "run_id": report.run_id,
                    "model_mpp": job.geometry.model_mpp,
                    "tile_size_px": registered.card.tile_size_px,
                },
            )
            committed(job, result)
            return
        finalise(
            job.partial_path,
            job.final_path,
            job.key,
            job.geometry,
            mpp_x=job.store.mpp_x,
            mpp_y=job.store.mpp_y,
            channel_names=channel_names,
            attributes={
                "slide_id": job.slide_id,
                "model_id": registered.model_id,
                "model": registered.ref,
                "kind": registered.card.kind,
                "class_names": channel_names,
                "slide_store": str(job.store.path),
                "infer_params": params.model_dump(mode="json"),
                "engine_version": __version__,
                "run_id": report.run_id,
                "output_px_um": job.geometry.level0_per_out_px_x * job.store.mpp_x,
                "tile_reading": model_frame(
                    job.store, registered.card.mpp, params.mpp_tolerance
                ).provenance(job.store),
            },
            result=result,
        )
        committed(job, result)

    def committed(job: SlideJob, result: dict[str, Any]) -> None:
        report.scored.append(result)
        report.first_commit_s = report.first_commit_s or time.perf_counter() - started
        write_table_part(
            layout.tables_dir,
            "inferred",
            [_inferred_row(result)],
            partition={"model_id": registered.model_id},
            run_id=report.run_id,
        )
        clear_failure(failure_marker(layout.root, "infer", job.slide_id, registered.model_id))
        tell(job.slide_id, "committed")

    def fail(job: SlideJob, error: BaseException) -> None:
        if not job.failed:
            job.failed = True
            failed_jobs.append(job)
            report.failures.append(
                FailureRecord.from_exception(
                    "infer",
                    job.slide_id,
                    error,
                    model_id=registered.model_id,
                    source_path=str(job.store.path),
                )
            )
            record_failure(
                failure_marker(layout.root, "infer", job.slide_id, registered.model_id),
                job.key,
                error_type=type(error).__name__,
                message=str(error),
                run_id=report.run_id,
            )
            tell(job.slide_id, "failed")

    def plan_next() -> int:
        """Plan the next slide; queue its units not done yet; return how many were queued."""
        store_path = paths.popleft()
        slide_id = store_path.name.removesuffix(".ome.zarr")
        key: dict[str, Any] | None = None
        try:
            store = SlideStore.open(store_path)
            if extractor:
                final_path = layout.features_store(registered.model_id, store.slide_id)
                key = features_key(prediction_key(store, registered, params), params.feature_dtype)
            else:
                final_path = layout.prediction_store(registered.model_id, store.slide_id)
                key = prediction_key(store, registered, params)
            if is_complete(final_path, key):
                report.skipped.append(store.slide_id)
                tell(store.slide_id, "skipped")
                return 0
            marker = failure_marker(layout.root, "infer", store.slide_id, registered.model_id)
            known = None if retry_failed else failed_before(marker, key)
            if known is not None:
                report.known_failures[store.slide_id] = f"{known['error_type']}: {known['message']}"
                tell(store.slide_id, "not_retried")
                return 0
            geometry, units = _plan_slide(store, registered, params)
            if not units:
                raise NoTissue(
                    f"no tile of slide {store.slide_id} at {registered.card.mpp} µm/px touches tissue."
                )
            if extractor:
                partial, done = open_or_create_feature_partial(final_path, key)
            else:
                partial, done = open_or_create_partial(final_path, key, geometry, channel_names)
        except StoreIncomplete as exc:
            report.failures.append(
                FailureRecord.from_exception("infer", slide_id, exc, model_id=registered.model_id)
            )
            tell(slide_id, "failed")
            return 0
        except SlideFleetError as exc:
            report.failures.append(
                FailureRecord.from_exception(
                    "infer",
                    slide_id,
                    exc,
                    model_id=registered.model_id,
                    source_path=str(store_path),
                )
            )
            if key is not None:
                record_failure(
                    failure_marker(layout.root, "infer", slide_id, registered.model_id),
                    key,
                    error_type=type(exc).__name__,
                    message=str(exc),
                    run_id=report.run_id,
                )
            tell(slide_id, "failed")
            return 0
        job = SlideJob(
            store,
            final_path,
            partial,
            key,
            geometry,
            len(units),
            sum(u.n_tiles for u in units),
            unit_keys=[u.key for u in units],
        )
        queued = 0
        for unit in units:
            if unit.key in done:
                job.units_done += 1
                job.tiles_done += unit.n_tiles
            else:
                queue.append((job, unit))
                queued += 1
        commit_if_done(job)  # every unit was done before a crash
        return queued

    while paths and not queue:  # find the first slide with work before starting Ray
        plan_next()

    def feed_open() -> bool:
        return feed is not None and not feed.exhausted

    if queue or feed is not None:
        ensure_ray(address)
        choice = choose_device(params)
        report.device = choice.as_record()
        # The share binds CPU actors, and GPU actors too when they sit on the one node ingest
        # uses (a local Ray with GPUs); on a cluster GPU actors live on their own nodes.
        single_node = (
            choice.autoscaler is None and sum(1 for n in ray.nodes() if n.get("Alive")) == 1
        )
        shared = cpu_share is not None and (choice.device == "cpu" or single_node)
        if cpu_share is not None and shared:
            params = params.model_copy(
                update={
                    "max_actors": cpu_share.max_actors
                    if params.max_actors is None
                    else min(cpu_share.max_actors, params.max_actors),
                    # On one node ingest may use every CPU: actors beside it reserve a token CPU and
                    # share the cores through the OS, one model thread each until ingest is done.
                    "cpus_per_actor": ACTOR_TOKEN_CPU if single_node else cpu_share.cpus_per_actor,
                }
            )
        # CPU actors beside ingest take its CPUs when it is done (only where ingest is on their node).
        widen_to = (
            cpu_share.threads_after_ingest
            if cpu_share is not None
            and shared
            and single_node
            and choice.device == "cpu"
            and cpu_share.threads_after_ingest > 1
            else None
        )
        # Streaming: the cohort's size is not known yet, so the cluster (and max_actors) decide.
        demand = actor_demand(
            choice, params, work_units=len(queue) + len(paths) if feed is None else 1 << 30
        )
        report.actors_wanted = demand.count
        log.info(
            "scoring on %s: %s; %d actors of %s wanted",
            choice.device,
            choice.reason,
            demand.count,
            demand.describe(),
        )
        actor_cls = ray.remote(ScoringActor)

        def spawn(index: int) -> Any:
            return actor_cls.options(
                **demand.options,
                name=f"slidefleet-scorer-{report.run_id}-{index}",
                max_restarts=params.max_actor_restarts,
                max_task_retries=params.max_actor_restarts,
                max_concurrency=params.reader_threads + 1,
                runtime_env={
                    "env_vars": {"OMP_NUM_THREADS": str(max(1, int(params.cpus_per_actor)))}
                },
            ).remote(
                str(registered.path),
                registered.card.model_dump_json(),
                registered.model_id,
                params.model_dump_json(),
            )

        request_demand(demand.bundle, demand.count)
        try:
            pool = ActorPool(spawn, demand)
        except BaseException:
            withdraw_demand()
            raise
        in_flight: dict[Any, tuple[int, Any, SlideJob, WorkUnit]] = {}
        window = demand.count * params.in_flight_per_actor * 2
        first_dispatch: float | None = None
        try:
            pool.wait_for(
                params.min_actors or (demand.count if choice.autoscaler is None else 1),
                params.actor_start_timeout_s,
            )
            report.scale_up_wait_s = pool.first_ready_s
            pool.dispatching = True
            with tqdm(desc=f"infer {registered.ref}", unit="tile", disable=not progress) as bar:
                last_progress = time.perf_counter()
                while queue or in_flight or paths or feed_open():
                    if widen_to is not None and feed is not None and feed.exhausted:
                        report.cpu_threads_after_ingest = widen_to
                        for index, actor in enumerate(pool.actors):
                            if actor is not None and pool.ready[index]:
                                actor.use_cpu_threads.remote(widen_to)
                        widen_to = None
                    if feed is not None and len(paths) + len(queue) < window:
                        # Streaming: take the stores committed since; wait for one when idle.
                        paths.extend(feed.drain(block=not queue and not in_flight and not paths))
                    while paths and len(queue) < window:
                        plan_next()
                    while queue and (index := pool.pick(params.in_flight_per_actor)) is not None:
                        job, unit = queue.popleft()
                        if job.failed:
                            continue
                        job.started = job.started or time.perf_counter()
                        first_dispatch = first_dispatch or job.started
                        actor = pool.actors[index]
                        ref = actor.score_unit.remote(
                            UnitJob(
                                unit,
                                job.geometry,
                                str(job.store.path),
                                str(job.partial_path if extractor else job.partial_path / "0"),
                            )
                        )
                        in_flight[ref] = (index, actor, job, unit)
                        pool.load[index] += 1
                        job.in_flight += 1
                    if not in_flight:
                        if queue and pool.n_ready == 0:  # every actor died: wait for a replacement
                            pool.wait_for(1, params.actor_start_timeout_s)
                        continue
                    done, _ = ray.wait(
                        [*in_flight, *pool.placing],
                        num_returns=1,
                        timeout=params.actor_start_timeout_s if feed is None else 0.5,
                    )
                    if (
                        not done
                        and time.perf_counter() - last_progress < params.actor_start_timeout_s
                    ):
                        continue  # streaming: look at the feed again
                    if not done:  # e.g. actors restarting after a node loss with nowhere to go
                        raise PlacementTimeout(
                            f"no work unit finished within {params.actor_start_timeout_s:g} s; "
                            + missing_resources(
                                demand, pool.n_ready, time.perf_counter() - pool.started
                            )
                        )
                    ref = done[0]
                    last_progress = time.perf_counter()
                    if pool.is_placement(ref):
                        pool.on_placed(ref)
                        continue
                    index, actor, job, unit = in_flight.pop(ref)
                    pool.unit_done(index, actor)
                    job.in_flight -= 1
                    try:
                        stats: UnitStats = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        cause = exc.cause if isinstance(exc.cause, BaseException) else exc
                        fail(job, cause)
                        continue
                    except ray.exceptions.RayActorError as exc:
                        # Restarts exhausted (or its node is gone): replace the actor, retry the unit.
                        report.actor_replacements += 1
                        if report.actor_replacements > 2 * demand.count + params.max_actor_restarts:
                            fail(
                                job,
                                WorkerDied(
                                    f"scoring actors keep dying ({exc}); giving up on this slide."
                                ),
                            )
                            continue
                        if pool.actors[index] is actor and pool.ready[index]:
                            log.warning(
                                "actor %d died for good (%s); starting a replacement",
                                index,
                                type(exc).__name__,
                            )
                            pool.replace(index)
                        job.retries += 1
                        report.unit_retries += 1
                        queue.appendleft((job, unit))
                        continue
                    if job.failed:
                        continue
                    record_unit_done(job.partial_path, unit.key)
                    job.units_done += 1
                    job.tiles_done += stats.tiles
                    job.read_seconds += stats.read_seconds
                    job.model_seconds += stats.model_seconds
                    report.tiles += stats.tiles
                    now = time.perf_counter()
                    if report.first_tile_s is None:
                        report.first_tile_s = now - started
                    report.scoring_seconds = now - (first_dispatch or now)
                    bar.update(stats.tiles)
                    if on_unit_done is not None:
                        on_unit_done(stats, pool.actors)
                    commit_if_done(job)
        finally:
            report.actors = pool.shutdown()
            report.actors_joined_late = pool.joined_late
            withdraw_demand()
            for job in failed_jobs:
                shutil.rmtree(job.partial_path, ignore_errors=True)

    report.seconds = time.perf_counter() - started
    merge_run_parts(
        layout.tables_dir,
        "inferred",
        run_id=report.run_id,
        partition={"model_id": registered.model_id},
    )
    write_failures(layout.tables_dir, report.failures, run_id=report.run_id)
    return report
