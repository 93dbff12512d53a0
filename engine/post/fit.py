"""Pass 1 of ``post``: fit the threshold of each objective on the calibration split.

Sweep counts of every calibration slide (``split == params.calibration_split``) are computed in
per-slide ``dask.delayed`` tasks and summed by a tree reduction on the workers, so only the sum
reaches the driver; each objective's threshold is fitted on that sum. Nothing from any other
split enters the fit.

No calibration slide with tumour in a cohort that assigns splits: the thresholds table stays
empty and a ``ThresholdFitError`` row (slide_id ``*``) goes to failures; slides are then
thresholded at ``params.fallback_threshold`` (objective ``fixed``) if one is configured, else not
at all. A cohort without splits (new slides to score) takes a stored fit or the card's default
(:mod:`engine.post.threshold_store`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dask import delayed

from engine.post.compute import OBJECTIVES, ThresholdFitError, fit_threshold, sweep_table
from engine.post.dask_cluster import SlideExecutor
from engine.post.params import PostParams
from engine.post.planning import task_key
from engine.post.report import COHORT_SLIDE_ID, PostReport
from engine.post.slide_task import STAGE, SlidePlan, SweepPart, sum_sweeps, sweep_task
from engine.post.threshold_store import store_fitted_threshold, threshold_without_calibration
from engine.tables import FailureRecord

log = logging.getLogger(__name__)

_REDUCE_FAN_IN = 8


def threshold_rows(
    part: SweepPart, params: PostParams, fitted: dict[str, float]
) -> list[dict[str, Any]]:
    """Rows of the ``thresholds`` table: the summed sweep, each row marked with what chose it."""
    assert part.counts is not None
    rows = sweep_table(part.counts)
    for row in rows:
        chosen = [o for o in OBJECTIVES if o in fitted and fitted[o] == row["threshold"]]
        row.update(
            {
                "fitted_on": params.calibration_split,
                "score_kind": params.score,
                "n_slides_fitted": len(part.slide_ids),
                "chosen_for": ",".join(chosen) or None,
            }
        )
    return rows


def _tree_sum(parts: list[Any]) -> Any:
    """Delayed tree reduction of pass-1 parts (fan-in 8), so only the sum reaches the driver."""
    if not parts:
        return delayed(sum_sweeps)()
    while len(parts) > 1:
        parts = [
            delayed(sum_sweeps, pure=True)(*parts[i : i + _REDUCE_FAN_IN])
            for i in range(0, len(parts), _REDUCE_FAN_IN)
        ]
    return parts[0]


def fit_objectives(part: SweepPart, params: PostParams) -> tuple[dict[str, float], str | None]:
    """Fitted threshold per objective, and why the chosen objective has none (or ``None``)."""
    fitted: dict[str, float] = {}
    reason: str | None = None
    for objective in OBJECTIVES:
        if part.counts is None:
            reason = (
                f"no calibration slide with ground truth (split {params.calibration_split!r}) "
                "to fit a threshold on"
            )
            break
        try:
            fitted[objective] = fit_threshold(part.counts, objective)
        except ThresholdFitError as exc:
            if objective == params.objective:
                reason = f"{exc} ({len(part.slide_ids)} calibration slides)"
    return fitted, reason


def fit_pass(
    executor: SlideExecutor,
    plans: Sequence[SlidePlan],
    params: PostParams,
    report: PostReport,
    failures: list[FailureRecord],
    *,
    fit_expected: bool,
) -> list[dict[str, Any]]:
    """Sum the calibration slides' sweeps on the workers, fit; return the sweep rows.

    ``fit_expected``: the cohort assigns splits, so it was meant to be fitted on (see
    :func:`choose_threshold`); a cohort with no split at all takes a threshold from elsewhere.

    Sets ``report.threshold`` / ``threshold_objective`` / ``fitted_thresholds`` /
    ``calibration_slide_ids``; appends failed slides (and a cohort-wide ``ThresholdFitError``)
    to ``failures``.
    """
    model_id = report.model.model_id
    parts = [
        delayed(sweep_task, pure=True)(
            p,
            params,
            model_id,
            dask_key_name=task_key(
                "sweep", model_id, report.params_hash, report.run_id, p.slide_id
            ),
        )
        for p in plans
    ]
    (summed,) = executor.compute([_tree_sum(parts)])
    if isinstance(summed, BaseException):  # the reduction itself was lost, not one slide
        raise summed
    failures += summed.failures
    fleet_root = Path(plans[0].slide_store).parent.parent if plans else None
    return choose_threshold(
        summed, params, report, failures, fleet_root=fleet_root, fit_expected=fit_expected
    )


def choose_threshold(
    summed: SweepPart,
    params: PostParams,
    report: PostReport,
    failures: list[FailureRecord],
    *,
    fleet_root: Path | None,
    fit_expected: bool = False,
) -> list[dict[str, Any]]:
    """Fit on the summed calibration sweeps, or take a threshold from elsewhere; the sweep rows.

    A fit is stored with the model version (:mod:`engine.post.threshold_store`). For a cohort
    without splits (``fit_expected`` false) the stored fit, ``post.fallback_threshold`` or the
    card's ``default_threshold`` is used; for one with splits whose calibration split cannot be
    fitted, only ``post.fallback_threshold``. ``report.threshold_source`` says which; only
    when none applies is a cohort-wide
    ``ThresholdFitError`` appended to ``failures`` (and no slide is thresholded).
    """
    fitted, reason = fit_objectives(summed, params)
    report.fitted_thresholds = fitted
    report.calibration_slide_ids = sorted(summed.slide_ids)
    if reason is None:
        report.threshold, report.threshold_objective = fitted[params.objective], params.objective
        report.threshold_source = {
            "kind": "calibration_fit",
            "calibration_split": params.calibration_split,
            "n_slides": len(report.calibration_slide_ids),
        }
        if fleet_root is not None:
            store_fitted_threshold(
                report.model,
                params,
                threshold=report.threshold,
                fitted_thresholds=fitted,
                calibration_slide_ids=report.calibration_slide_ids,
                fleet_root=fleet_root,
                run_id=report.run_id,
            )
        return threshold_rows(summed, params, fitted)
    # A cohort meant to be fitted (it assigns splits) whose calibration split cannot be fitted
    # (empty, no ground truth, no tumour) has a problem the user must see: only an explicit
    # post.fallback_threshold overrides it. Stored fits and the card's default serve cohorts
    # with no splits, i.e. nothing to fit on by design.
    if not fit_expected:
        found = threshold_without_calibration(report.model, params)
    elif params.fallback_threshold is not None:
        found = params.fallback_threshold, "fixed", {"kind": "post.fallback_threshold"}
    else:
        found = None
    if found is not None:
        report.threshold, report.threshold_objective, source = found
        report.threshold_source = {**source, "why": reason}
        log.info(
            "post %s: %s; using the threshold %s from %s",
            report.model.ref,
            reason,
            report.threshold,
            source["kind"],
        )
        return []
    failures.append(
        FailureRecord(
            STAGE,
            COHORT_SLIDE_ID,
            ThresholdFitError.__name__,
            reason
            + "; run a calibration cohort with ground truth for this model version first, or set "
            "post.fallback_threshold (or the model card's default_threshold) to threshold slides anyway",
            model_id=report.model.model_id,
        )
    )
    return []


__all__ = ["choose_threshold", "fit_objectives", "fit_pass", "threshold_rows"]
