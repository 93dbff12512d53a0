"""Reprocessing: recompute exactly what a new model version or changed parameter makes stale.

Every output is keyed by what made it (DESIGN: content-addressed outputs):

* a slide store by (slide sha256, annotation sha256, mpp override, ingest params hash);
* a prediction by (slide sha256, slide params hash, model_id, infer params hash);
* post tables by (model_id, post params hash, the keys of every prediction they read).

The plan compares those keys with the completion records on disk; nothing else is consulted.
A new model version (``models add``) has a new model_id, so its predictions and tables are new
and no slide is re-ingested; a changed post parameter changes only the post key.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import SlideFleetError
from engine.infer.driver import prediction_key
from engine.infer.prediction_store import is_complete
from engine.ingest.convert import input_key
from engine.manifest import read_manifest
from engine.models import ModelRegistry
from engine.operate.config import JobConfig
from engine.operate.pipeline import (
    CohortResult,
    finish_run,
    load_fleet_state,
    run_stages,
    save_fleet_state,
    views_are_current,
    views_key,
)
from engine.operate.telemetry import RunRecord
from engine.qc.gate import excluded_slides
from engine.runs import new_run_id
from engine.slides.hashing import HashCache, check_input_file
from engine.store import FleetLayout, read_completion
from engine.store.failed import failed_before, failure_marker
from engine.store.slide_store import SlideStore

log = logging.getLogger(__name__)


@dataclass
class ReprocessPlan:
    """What is stale, and why. Empty lists/dicts mean everything is up to date."""

    ingest: dict[str, str] = field(default_factory=dict)  # slide_id -> reason
    infer: dict[str, dict[str, str]] = field(
        default_factory=dict
    )  # model ref -> slide_id -> reason
    post: dict[str, str] = field(default_factory=dict)  # model ref -> reason
    model_ids: dict[str, str] = field(default_factory=dict)
    up_to_date_slides: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # slide_id -> why its input is unusable
    not_retried: dict[str, dict[str, str]] = field(default_factory=dict)
    """stage -> slide_id -> error: failed before on the same inputs, skipped (``retry_failed``)."""

    @property
    def is_empty(self) -> bool:
        return not (self.ingest or any(self.infer.values()) or self.post)

    def describe(self) -> str:
        lines = []
        if self.ingest:
            lines.append(f"ingest: {len(self.ingest)} slide(s)")
            lines += [f"  {slide_id}: {reason}" for slide_id, reason in sorted(self.ingest.items())]
        else:
            lines.append(
                f"ingest: nothing stale ({self.up_to_date_slides} slide stores up to date)"
            )
        if self.refused:
            lines.append(
                f"refused (input not usable, fix the manifest): {len(self.refused)} slide(s)"
            )
            lines += [
                f"  {slide_id}: {reason}" for slide_id, reason in sorted(self.refused.items())
            ]
        for ref, model_id in self.model_ids.items():
            stale = self.infer.get(ref, {})
            lines.append(
                f"infer {ref} (model_id {model_id}): {len(stale)} slide(s)"
                if stale
                else f"infer {ref} (model_id {model_id}): nothing stale"
            )
            lines += [f"  {slide_id}: {reason}" for slide_id, reason in sorted(stale.items())]
            lines.append(
                f"post+views {ref}: {self.post[ref]}"
                if ref in self.post
                else f"post+views {ref}: up to date"
            )
        for stage, slides in sorted(self.not_retried.items()):
            lines.append(
                f"{stage}: {len(slides)} slide(s) not retried: they failed before on the same inputs "
                "(--retry-failed retries them)"
            )
            lines += [f"  {slide_id}: {error}" for slide_id, error in sorted(slides.items())]
        return "\n".join(lines)


def plan_reprocess(root: Path | str, config: JobConfig | None = None) -> ReprocessPlan:
    """Compare every output's key with what is on disk (hashes slide files: reads them once)."""
    from engine.post import post_is_current

    layout = FleetLayout(Path(root))
    job = config or load_fleet_state(layout)
    plan = ReprocessPlan()
    assert job.manifest is not None
    entries = read_manifest(job.manifest).entries
    hash_cache = HashCache(layout.hash_cache)
    for entry in entries:
        store_path = layout.slide_store(entry.slide_id)
        record = read_completion(store_path)
        try:  # checked before any hashing: a FIFO or /dev/zero must not hang the plan
            check_input_file(entry.path)
            key = input_key(entry, job.ingest, cache=hash_cache)
        except SlideFleetError as exc:
            # It fails ingest with the same error whenever it runs; nothing to recompute.
            plan.refused[entry.slide_id] = f"{type(exc).__name__}: {exc}"
            continue
        if record is None:
            known = failed_before(failure_marker(layout.root, "ingest", entry.slide_id), key)
            if known is not None and not job.retry_failed:
                plan.not_retried.setdefault("ingest", {})[entry.slide_id] = (
                    f"{known['error_type']}: {known['message']}"
                )
                continue
            plan.ingest[entry.slide_id] = (
                "failed before; retried"
                if known is not None
                else "not ingested yet (or its last attempt failed)"
            )
        elif record.get("input_key") != key:
            old = record.get("input_key", {})
            changed = [name for name in key if old.get(name) != key[name]]
            plan.ingest[entry.slide_id] = "changed: " + ", ".join(changed)
        else:
            plan.up_to_date_slides += 1
    gated = set(excluded_slides(layout.tables_dir))  # QC keeps them out of inference
    registry = ModelRegistry(layout.root)
    for ref in job.models:
        registered = registry.resolve(ref)
        plan.model_ids[ref] = registered.model_id
        stale: dict[str, str] = {}
        for entry in entries:
            if entry.slide_id in plan.ingest:
                stale[entry.slide_id] = "slide is re-ingested"
                continue
            try:
                store = SlideStore.open(layout.slide_store(entry.slide_id))
            except SlideFleetError:
                continue  # never ingested successfully: nothing to score
            if entry.slide_id in gated:
                continue
            key = prediction_key(store, registered, job.infer)
            if not is_complete(layout.prediction_store(registered.model_id, entry.slide_id), key):
                marker = failure_marker(layout.root, "infer", entry.slide_id, registered.model_id)
                known = failed_before(marker, key)
                if known is not None and not job.retry_failed:
                    plan.not_retried.setdefault(f"infer:{registered.ref}", {})[entry.slide_id] = (
                        f"{known['error_type']}: {known['message']}"
                    )
                    continue
                stale[entry.slide_id] = "no prediction for this model version and parameters"
        plan.infer[ref] = stale
        if stale:
            plan.post[ref] = f"{len(stale)} prediction(s) recomputed"
        elif not post_is_current(layout.root, registered.ref, job.post):
            plan.post[ref] = "post parameters or predictions changed since the last post run"
        elif job.views and not _views_current(layout, registered.model_id, job):
            plan.post[ref] = "views missing or view parameters changed"
    return plan


def _views_current(layout: FleetLayout, model_id: str, job: JobConfig) -> bool:
    from engine.post import read_post_record

    params_hash = job.post.output_hash()
    record = read_post_record(layout.root, model_id, params_hash)
    run_id = None if record is None else record.get("run_id")
    return views_are_current(layout, model_id, views_key(run_id, params_hash, job.view))


def reprocess(
    root: Path | str,
    *,
    config: JobConfig | None = None,
    dry_run: bool = False,
    progress: bool = True,
    retry_failed: bool | None = None,
) -> tuple[ReprocessPlan, CohortResult | None]:
    """Plan, and unless ``dry_run``, recompute exactly the stale outputs.

    A slide whose last attempt failed on the same inputs is not retried unless ``retry_failed``
    (or the config's ``retry_failed``) is set; a changed slide or parameter retries it.
    """
    layout = FleetLayout(Path(root))
    job = config or load_fleet_state(layout)
    job = job.model_copy(update={"root": str(layout.root)})
    if retry_failed is not None:
        job = job.model_copy(update={"retry_failed": retry_failed})
    plan = plan_reprocess(layout.root, job)
    if dry_run or plan.is_empty:
        return plan, None
    run_id = new_run_id()
    record = RunRecord(run_id=run_id, config=job.model_dump(mode="json"))
    record.stage("reprocess", plan=plan.describe())
    model_ids, failures = run_stages(
        job,
        run_id=run_id,
        record=record,
        progress=progress,
        skip_ingest=not plan.ingest,
        ingest_slide_ids=sorted(plan.ingest),
        infer_slide_ids={ref: sorted(stale) for ref, stale in plan.infer.items()},
        post_models=[ModelRegistry(layout.root).resolve(ref).ref for ref in plan.post],
    )
    save_fleet_state(layout, job)
    return plan, finish_run(layout, job, record, model_ids, failures)


def watch(
    root: Path | str, *, every_s: float, max_runs: int | None = None, progress: bool = False
) -> int:
    """Poll the registry and inputs every ``every_s`` seconds and reprocess what is stale."""
    runs = 0
    while max_runs is None or runs < max_runs:
        plan, result = reprocess(root, progress=progress)
        runs += 1
        if result is None:
            log.info("watch: nothing stale")
        else:
            log.warning("watch: reprocessed (run %s):\n%s", result.run_id, plan.describe())
        if max_runs is not None and runs >= max_runs:
            break
        time.sleep(every_s)
    return runs
