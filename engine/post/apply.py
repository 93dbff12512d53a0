"""Pass 2 of ``post``: every slide at the one fitted threshold, one ``dask.delayed`` task each.

Each task opens its slide's zarr stores inside the worker (scores, z-scored if asked → the
threshold → morphology → regions → quantities → metrics against ground truth → rows). A task
that fails, or is lost with its worker, becomes that slide's failure row; the cohort goes on.
"""

from __future__ import annotations

from collections.abc import Sequence

from dask import delayed
from tqdm.auto import tqdm

from engine.post.dask_cluster import SlideExecutor
from engine.post.params import PostParams
from engine.post.planning import task_key
from engine.post.report import PostReport
from engine.post.slide_task import STAGE, SlidePlan, SlideResult, slide_task
from engine.tables import FailureRecord


def apply_pass(
    executor: SlideExecutor,
    plans: Sequence[SlidePlan],
    params: PostParams,
    report: PostReport,
    failures: list[FailureRecord],
    progress: bool,
) -> list[SlideResult]:
    """Every slide at ``report.threshold``; failed tasks are appended to ``failures``."""
    if report.threshold is None or not plans:
        return []
    model_id = report.model.model_id
    tasks = [
        delayed(slide_task, pure=True)(
            p,
            params,
            model_id,
            report.threshold,
            report.threshold_objective,
            dask_key_name=task_key(
                "slide", model_id, report.params_hash, report.run_id, p.slide_id
            ),
        )
        for p in plans
    ]
    with tqdm(
        total=len(tasks), desc=f"post {report.model.ref}", unit="slide", disable=not progress
    ) as bar:
        outcomes = executor.compute(tasks, progress=bar.update)
    results: list[SlideResult] = []
    for p, outcome in zip(plans, outcomes, strict=True):
        if isinstance(outcome, SlideResult):
            results.append(outcome)
        elif isinstance(outcome, FailureRecord):
            failures.append(outcome)
        else:  # the task itself was lost (a worker died): still one slide's failure
            failures.append(
                FailureRecord.from_exception(
                    STAGE, p.slide_id, outcome, source_path=p.prediction, model_id=model_id
                )
            )
    return results


__all__ = ["apply_pass"]
