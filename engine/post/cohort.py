"""``post``: one model's score maps over the whole cohort → Parquet tables, with Dask.

The run, one module per job:

1. :mod:`~engine.post.planning`: which slides (completion records only) and the inputs' key.
2. :mod:`~engine.post.fit`: pass 1, the calibration split's summed sweep → a threshold per
   objective (nothing from any other split enters the fit).
3. :mod:`~engine.post.apply`: pass 2, every slide at that threshold (:mod:`~engine.post.slide_task`
   opens its stores inside the task; a failed slide becomes a failures row).
4. :mod:`~engine.post.aggregate`: the cohort rows from the slides' rows.
5. :mod:`~engine.post.outputs`: the tables (one Parquet part each), then the completion record
   (:mod:`~engine.post.record`), then the superseded parts are removed.

A run whose record matches the current inputs is not recomputed: its tables are read back.

Memory: a task holds one slide's maps on the prediction grid (a 100,000² px slide at 0.25 µm
scored at 8 µm is 3,125² px: 39 MB of float32), never an RGB level and never two slides; the
driver holds rows only. A map too large for one worker would be read as a dask array inside its
task and labelled with ``dask_image.ndmeasure.label`` (exact across chunks, but slow per-label
measurements): not needed at tile resolution, so not implemented.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from engine.post.apply import apply_pass
from engine.post.dask_cluster import open_executor
from engine.post.fit import fit_pass
from engine.post.outputs import reuse, write_outputs
from engine.post.params import PostParams
from engine.post.planning import PredictionMissing, plan_cohort, resolve_model
from engine.post.record import (
    post_is_current,
    read_post_record,
    record_is_current,
    record_path,
    stale_slides,
)
from engine.post.report import PostReport
from engine.runs import new_run_id
from engine.store import FleetLayout

log = logging.getLogger(__name__)


def post(
    root: Path | str,
    model: str,
    *,
    params: PostParams | None = None,
    dask_address: str | None = None,
    progress: bool = True,
    run_id: str | None = None,
    force: bool = False,
) -> PostReport:
    """Post-process every scored slide of ``model`` (``name[:version]``) into ``root/tables``.

    Thresholds are fitted on ``params.calibration_split`` only and applied to every slide. Slides
    without a complete prediction or slide store, and slides whose task fails, become ``failures``
    rows (stage ``post``); the others complete. With identical parameters and unchanged inputs
    the previous run's tables are returned without recomputing (``report.reused``); ``force``
    recomputes anyway. ``dask_address`` joins a running Dask scheduler; otherwise
    ``params.execution`` decides where the tasks run.
    """
    started = time.perf_counter()
    params = params or PostParams()
    params_hash = params.output_hash()
    layout = FleetLayout(Path(root))
    registered = resolve_model(layout, model)
    plan = plan_cohort(layout, registered, params)
    previous = read_post_record(layout.root, registered.model_id, params_hash)
    report = PostReport(
        run_id=run_id or new_run_id(),
        model=registered,
        params=params,
        params_hash=params_hash,
        tables={},
        record_path=record_path(layout, registered.model_id, params_hash),
    )
    timings = {"plan_s": time.perf_counter() - started}

    if not force and previous is not None and record_is_current(layout, previous, plan.inputs):
        reuse(layout, report, previous)
        log.info("post %s: up to date (run %s), tables read back", registered.ref, report.run_id)
    else:
        failures = list(plan.failures)
        calibration = [p for p in plan.plans if p.split == params.calibration_split]
        with open_executor(
            params.execution, n_slides=len(plan.plans), dask_address=dask_address
        ) as executor:
            report.scheduler = executor.description
            mark = time.perf_counter()
            timings["cluster_start_s"] = mark - started - timings["plan_s"]
            threshold_rows = fit_pass(
                executor,
                calibration,
                params,
                report,
                failures,
                fit_expected=any(p.split for p in plan.plans),
            )
            timings["fit_s"] = time.perf_counter() - mark
            mark = time.perf_counter()
            failed = {f.slide_id for f in failures}
            todo = [p for p in plan.plans if p.slide_id not in failed]
            results = apply_pass(executor, todo, params, report, failures, progress)
            timings["slides_s"] = time.perf_counter() - mark
            mark = time.perf_counter()
        timings["cluster_stop_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        report.failures = failures
        superseded = previous or read_post_record(
            layout.root, registered.model_id, params_hash, any_format=True
        )
        write_outputs(layout, report, plan, results, threshold_rows, superseded)
        timings["write_s"] = time.perf_counter() - mark
        log.info(
            "post %s: %d slides, %d failures (%s)",
            registered.ref,
            report.slides.num_rows,
            len(failures),
            report.scheduler,
        )
    report.seconds = time.perf_counter() - started
    report.timings = {**timings, "total_s": report.seconds}
    return report


__all__ = [
    "PostReport",
    "PredictionMissing",
    "plan_cohort",
    "post",
    "post_is_current",
    "read_post_record",
    "stale_slides",
]
