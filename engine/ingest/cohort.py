"""Ingest a cohort: one Ray task per slide, failures as data, the run goes on."""

from __future__ import annotations

import dataclasses
import logging
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import ray
from tqdm.auto import tqdm

from engine.cluster import ensure_ray
from engine.errors import SlideFleetError, WorkerDied
from engine.ingest.convert import IngestResult, convert_slide, input_key
from engine.ingest.params import IngestParams
from engine.manifest import SlideEntry, read_manifest
from engine.runs import new_run_id
from engine.slides.hashing import HashCache
from engine.store import FleetLayout, remove_stale_temporaries
from engine.store.failed import clear_failure, failed_before, failure_marker, record_failure
from engine.tables import FailureRecord, read_table, write_failures
from engine.tables.current import replace_current_rows

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """Outcome of one ingest run."""

    run_id: str
    results: list[IngestResult] = field(default_factory=list)
    failures: list[FailureRecord] = field(default_factory=list)
    known_failures: dict[str, str] = field(default_factory=dict)
    """slide_id -> error of its last attempt, made on the same inputs: not retried."""
    node_loss_resubmits: int = 0

    @property
    def converted(self) -> list[IngestResult]:
        return [r for r in self.results if not r.skipped]

    @property
    def skipped(self) -> list[IngestResult]:
        return [r for r in self.results if r.skipped]


def _convert_or_fail(
    entry: SlideEntry, layout: FleetLayout, params: IngestParams
) -> IngestResult | FailureRecord:
    """Runs inside a Ray task: expected failures come back as data, not exceptions."""
    logging.basicConfig(level=logging.WARNING)
    cpu_started = time.process_time()
    try:
        result = convert_slide(entry, layout, params)
        return dataclasses.replace(
            result,
            cpu_seconds=time.process_time() - cpu_started,
            peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        )
    except SlideFleetError as exc:
        return FailureRecord.from_exception(
            "ingest", entry.slide_id, exc, source_path=str(entry.path)
        )
    except Exception as exc:  # an unexpected bug must not take the cohort down
        log.exception("unexpected error ingesting %s", entry.slide_id)
        return FailureRecord.from_exception(
            "ingest", entry.slide_id, exc, source_path=str(entry.path)
        )


# SPREAD: slides go to every node's CPUs, not first to the head's. One automatic retry covers a
# worker crash; a node lost mid-task (spot reclaim) is resubmitted by the driver on top of that.
_convert_task = ray.remote(num_cpus=1, max_retries=1, scheduling_strategy="SPREAD")(
    _convert_or_fail
)
NODE_LOSS_RESUBMITS = 3


def _dead_nodes() -> set[str]:
    return {n["NodeID"] for n in ray.nodes() if not n.get("Alive")}


def _dead_nodes_after(dead_before: set[str], wait_s: float = 15.0) -> set[str]:
    """Dead nodes, waiting up to ``wait_s`` for a new one: a task's worker can be reported lost
    before the GCS marks its node dead (its heartbeats time out a few seconds later)."""
    deadline = time.monotonic() + wait_s
    while True:
        dead = _dead_nodes()
        if dead - dead_before or time.monotonic() >= deadline:
            return dead
        time.sleep(0.5)


def cpus_per_slide(params: IngestParams, n_slides: int) -> int:
    """CPUs (and reader threads) each slide's task gets: the configured number, or the cluster's
    CPUs shared among the slides, never more than are free now (a task asking for more CPUs than
    other actors leave, or than one node has, would wait forever)."""
    if params.cpus_per_slide is not None:
        return params.cpus_per_slide
    total = int(ray.cluster_resources().get("CPU", 1))
    free = int(ray.available_resources().get("CPU", 0))
    # A task runs on one node: on a cluster, never ask for more CPUs than its largest node has.
    largest = max(
        (int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=1
    )
    return max(1, min(total // max(1, n_slides), free, largest))


def failure_key(
    entry: SlideEntry, params: IngestParams, cache: HashCache | None = None
) -> dict[str, object]:
    """The inputs an ingest attempt ran on; a file that cannot be read is keyed by its path."""
    try:
        return input_key(entry, params, cache=cache)
    except (OSError, SlideFleetError):
        return {"unreadable": str(entry.path), "params_hash": params.output_hash()}


def known_failure(
    layout: FleetLayout, entry: SlideEntry, params: IngestParams
) -> dict[str, object] | None:
    """The failure marker of ``entry`` when its last ingest failed on the same inputs."""
    marker = failure_marker(layout.root, "ingest", entry.slide_id)
    if not marker.exists():
        return None
    return failed_before(marker, failure_key(entry, params, HashCache(layout.hash_cache)))


def ingest(
    manifest: Path | str,
    root: Path | str,
    *,
    params: IngestParams | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    slide_ids: Sequence[str] | None = None,
    progress: bool = True,
    run_id: str | None = None,
    retry_failed: bool = True,
    first_split: str | None = None,
    max_in_flight: int | None = None,
    on_slide: Callable[[str, str], None] | None = None,
) -> IngestReport:
    """Convert every slide of ``manifest`` into ``root/slides/<slide_id>.ome.zarr``.

    Slides whose file, annotation and parameters are unchanged since a completed conversion are
    skipped. Each failing slide becomes a row of ``root/tables/failures``; the others complete.
    A failure also leaves a marker with the slide's input key; with ``retry_failed=False`` a
    slide whose last attempt failed on the same inputs is not tried again (``known_failures``).

    For streaming runs: slides of ``first_split`` are submitted first (calibration slides, so
    post can fit early); at most ``max_in_flight`` conversions are queued on Ray at a time; and
    ``on_slide(slide_id, outcome)`` is told each outcome as it lands (``converted``,
    ``skipped``, ``failed``, ``not_retried``); it may block (backpressure from the next stage).
    """
    params = params or IngestParams()
    layout = FleetLayout(Path(root))
    report = IngestReport(run_id=run_id or new_run_id())
    parsed = read_manifest(manifest)
    for rejected in parsed.rejected:
        report.failures.append(
            FailureRecord.from_exception("manifest", rejected.slide_id, rejected.error)
        )
    entries = [e for e in parsed.entries if slide_ids is None or e.slide_id in set(slide_ids)]
    if not retry_failed:
        for entry in entries:
            known = known_failure(layout, entry, params)
            if known is not None:
                report.known_failures[entry.slide_id] = f"{known['error_type']}: {known['message']}"
        entries = [e for e in entries if e.slide_id not in report.known_failures]
    if first_split is not None:
        entries.sort(key=lambda e: e.split != first_split)  # stable: manifest order otherwise
    if on_slide is not None:
        for slide_id in report.known_failures:
            on_slide(slide_id, "not_retried")
    layout.slides_dir.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temporaries(layout.slides_dir):
        log.warning("removed %s left half-written by an interrupted run", stale.name)

    if entries:
        ensure_ray(address, num_cpus=num_cpus)
        cpus = cpus_per_slide(params, len(entries))
        task = _convert_task.options(num_cpus=cpus)
        task_params = params.model_copy(update={"cpus_per_slide": cpus})
        dead = _dead_nodes()
        waiting = list(reversed(entries))
        limit = max_in_flight or len(entries)
        pending: dict[ray.ObjectRef, tuple[SlideEntry, set[str], int]] = {}
        with tqdm(total=len(entries), desc="ingest", unit="slide", disable=not progress) as bar:
            while pending or waiting:
                while waiting and len(pending) < limit:
                    entry = waiting.pop()
                    pending[task.remote(entry, layout, task_params)] = (
                        entry,
                        dead if not pending else _dead_nodes(),
                        0,
                    )
                done, _ = ray.wait(list(pending), num_returns=1)
                entry, dead_before, resubmits = pending.pop(done[0])
                try:
                    outcome = ray.get(done[0])
                except (
                    ray.exceptions.RayTaskError,
                    ray.exceptions.WorkerCrashedError,
                    ray.exceptions.RayError,
                ) as exc:
                    dead_now = (
                        _dead_nodes_after(dead_before)
                        if not isinstance(exc, ray.exceptions.RayTaskError)
                        else _dead_nodes()
                    )
                    if (
                        not isinstance(exc, ray.exceptions.RayTaskError)
                        and dead_now - dead_before
                        and resubmits < NODE_LOSS_RESUBMITS
                    ):
                        # A node died while this slide was converting: its work, not the slide, is lost.
                        log.warning(
                            "a node was lost while converting %s; converting it again",
                            entry.slide_id,
                        )
                        report.node_loss_resubmits += 1
                        pending[task.remote(entry, layout, task_params)] = (
                            entry,
                            dead_now,
                            resubmits + 1,
                        )
                        continue
                    outcome = FailureRecord.from_exception(
                        "ingest",
                        entry.slide_id,
                        WorkerDied(
                            f"the worker converting this slide died ({type(exc).__name__}); "
                            "it was retried once. The file may crash the slide library."
                        ),
                        source_path=str(entry.path),
                    )
                marker = failure_marker(layout.root, "ingest", entry.slide_id)
                if isinstance(outcome, FailureRecord):
                    report.failures.append(outcome)
                    record_failure(
                        marker,
                        failure_key(entry, params, HashCache(layout.hash_cache)),
                        error_type=outcome.error_type,
                        message=outcome.message,
                        run_id=report.run_id,
                    )
                else:
                    report.results.append(outcome)
                    clear_failure(marker)
                    if outcome.annotation_error is not None:
                        report.failures.append(
                            FailureRecord.from_exception(
                                "ingest",
                                entry.slide_id,
                                outcome.annotation_error,
                                source_path=str(entry.annotation),
                            )
                        )
                bar.set_postfix(failed=len(report.failures))
                bar.update()
                if on_slide is not None:
                    state = (
                        "failed"
                        if isinstance(outcome, FailureRecord)
                        else ("skipped" if outcome.skipped else "converted")
                    )
                    on_slide(entry.slide_id, state)

    # One current row per slide: a conversion replaces the slide's row; a reused store keeps
    # the row of the conversion that made it (written here only if that row is missing).
    ingested = read_table(layout.tables_dir, "ingested")
    recorded = set(ingested.column("slide_id").to_pylist()) if ingested.num_rows else set()
    rows = [r.table_row() for r in report.results if not r.skipped or r.slide_id not in recorded]
    replace_current_rows(layout.tables_dir, "ingested", rows, key="slide_id", run_id=report.run_id)
    write_failures(layout.tables_dir, report.failures, run_id=report.run_id)
    return report
