"""``post`` fed slide by slide, for a streaming run: the same two passes, started as inputs land.

A :class:`PostStream` is told each time a prediction of its model commits. Calibration slides'
sweeps start at once; the threshold is fitted as soon as every calibration slide the run
expects has committed or failed (the run schedules calibration slides first); from then on each
committed slide's per-slide pass (:func:`engine.post.slide_task.slide_task`, the very task
``post`` runs) starts on its own. :meth:`PostStream.finish` plans the whole cohort as ``post``
does, computes what was not streamed (slides scored by earlier runs), writes the same tables and
completion record, or reads an up-to-date run back when nothing changed.

Tasks run in a small thread pool in the driver (a slide's maps are on the prediction grid:
megabytes), so they need no Ray CPUs the scoring actors and ingest tasks are using.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from engine.post.dask_cluster import _one_blas_thread
from engine.post.fit import choose_threshold
from engine.post.outputs import reuse, write_outputs
from engine.post.params import PostParams
from engine.post.planning import CohortPlan, plan_cohort, resolve_model
from engine.post.planning import _positive_channel as positive_channel
from engine.post.record import read_post_record, record_is_current, record_path
from engine.post.report import PostReport
from engine.post.slide_task import (
    STAGE,
    SlidePlan,
    SlideResult,
    SweepPart,
    slide_task,
    sum_sweeps,
    sweep_task,
)
from engine.runs import new_run_id
from engine.store import FleetLayout, read_completion
from engine.tables import FailureRecord

log = logging.getLogger(__name__)


class PostStream:
    """One model's post, fed by prediction commits; thread-safe."""

    def __init__(
        self,
        root: Path | str,
        model: str,
        *,
        params: PostParams | None = None,
        run_id: str | None = None,
        expected_calibration: set[str] | None = None,
        workers: int = 2,
        clock_origin: float | None = None,
        fit_expected: bool | None = None,
        on_slide: Callable[[SlideResult], None] | None = None,
    ) -> None:
        self.layout = FleetLayout(Path(root))
        self.params = params or PostParams()
        self.model = resolve_model(self.layout, model)
        params_hash = self.params.output_hash()
        self.report = PostReport(
            run_id=run_id or new_run_id(),
            model=self.model,
            params=self.params,
            params_hash=params_hash,
            tables={},
            record_path=record_path(self.layout, self.model.model_id, params_hash),
            scheduler="streamed: driver thread pool",
        )
        self._channel = positive_channel(self.model, self.params)
        self._origin = clock_origin if clock_origin is not None else time.perf_counter()
        self._lock = threading.RLock()
        # One BLAS thread while slides run here, as on a Dask worker (same sums, and faster).
        self._blas = _one_blas_thread()
        self._blas.__enter__()
        self._pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=f"post-{self.model.name}"
        )
        self._sweeps: dict[str, Future[SweepPart]] = {}
        self._slides: dict[str, Future[SlideResult | FailureRecord]] = {}
        self._waiting: dict[str, SlidePlan] = {}
        self._expected = set(expected_calibration or ())
        self._fit_expected = fit_expected
        """Whether the cohort assigns splits (see :func:`engine.post.fit.choose_threshold`);
        ``None``: judged from the slides planned when the fit is made."""
        self._started = False
        self._fitted = False
        self._threshold_rows: list[dict[str, Any]] = []
        self._failures: list[FailureRecord] = []
        self.first_result_s: float | None = None
        """Seconds from ``clock_origin`` to the first slide row computed."""
        self.fit_s: float | None = None
        """Seconds from ``clock_origin`` to the threshold being known."""
        self._on_slide = on_slide
        """Told each slide's rows as soon as they are computed (the streaming run's views)."""

    # -- feeding ------------------------------------------------------------------------------
    def _cohort(self) -> CohortPlan:
        return plan_cohort(self.layout, self.model, self.params)

    def _plan_one(self, slide_id: str) -> SlidePlan | None:
        """The slide's plan from its two completion records (``plan_cohort`` for one slide)."""
        slide_path = self.layout.slide_store(slide_id)
        prediction_path = self.layout.prediction_store(self.model.model_id, slide_id)
        slide_record = read_completion(slide_path)
        if slide_record is None or read_completion(prediction_path) is None:
            return None
        result = slide_record.get("result", {})
        n_classes = len(self.model.card.class_names)
        return SlidePlan(
            slide_id=slide_id,
            slide_store=str(slide_path),
            prediction=str(prediction_path),
            split=result.get("split"),
            label=result.get("label"),
            channel=self._channel,
            n_classes=n_classes,
            multiclass=n_classes > 1 and self.model.card.kind != "anomaly_scorer",
        )

    def _start(self) -> None:
        """On the first commit: sweep the calibration slides scored by earlier runs too."""
        if self._started:
            return
        self._started = True
        for plan in self._cohort().plans:
            if plan.split == self.params.calibration_split and plan.slide_id not in self._sweeps:
                self._sweeps[plan.slide_id] = self._pool.submit(
                    sweep_task, plan, self.params, self.model.model_id
                )

    def committed(self, slide_id: str) -> None:
        """A prediction of this model committed (or a slide's prediction is known complete)."""
        with self._lock:
            self._start()
            plan = self._plan_one(slide_id)
            self._expected.discard(slide_id)
            if plan is None:
                self._maybe_fit()
                return
            if plan.split == self.params.calibration_split and slide_id not in self._sweeps:
                self._sweeps[slide_id] = self._pool.submit(
                    sweep_task, plan, self.params, self.model.model_id
                )
            if self._fitted:
                self._submit_slide(plan)
            else:
                self._waiting[slide_id] = plan
            self._maybe_fit()

    def gone(self, slide_id: str) -> None:
        """A slide the run expected will not get a prediction (it failed upstream)."""
        with self._lock:
            self._expected.discard(slide_id)
            if self._started:
                self._maybe_fit()

    def _submit_slide(self, plan: SlidePlan) -> None:
        if self.report.threshold is None or plan.slide_id in self._slides:
            return
        future = self._pool.submit(
            slide_task,
            plan,
            self.params,
            self.model.model_id,
            self.report.threshold,
            self.report.threshold_objective or self.params.objective,
        )
        future.add_done_callback(self._slide_done)
        self._slides[plan.slide_id] = future

    def _slide_done(self, future: Future[SlideResult | FailureRecord]) -> None:
        if future.cancelled() or future.exception() is not None:
            return  # finish() turns the exception into the slide's failure row
        outcome = future.result()
        if not isinstance(outcome, SlideResult):
            return
        if self.first_result_s is None:
            self.first_result_s = time.perf_counter() - self._origin
        if self._on_slide is not None:
            try:
                self._on_slide(outcome)
            except Exception:  # views drawn late (by render_views) rather than a lost post
                log.exception("handing %s's rows on", outcome.slide_id)

    def _maybe_fit(self, force: bool = False) -> None:
        if self._fitted or (self._expected and not force):
            return
        pending = [f for f in self._sweeps.values() if not f.done()]
        if pending and not force:
            pending[0].add_done_callback(lambda _f: self._refit_later())
            return
        parts = [f.result() for f in self._sweeps.values()]
        summed = sum_sweeps(*parts) if parts else SweepPart(None, (), ())
        self._failures += list(summed.failures)
        fit_expected = self._fit_expected
        if fit_expected is None:
            fit_expected = any(p.split for p in self._cohort().plans)
        self._threshold_rows = choose_threshold(
            summed,
            self.params,
            self.report,
            self._failures,
            fleet_root=self.layout.root,
            fit_expected=fit_expected,
        )
        self._fitted = True
        self.fit_s = time.perf_counter() - self._origin
        failed = {f.slide_id for f in self._failures}
        for slide_id, plan in sorted(self._waiting.items()):
            if slide_id not in failed:
                self._submit_slide(plan)
        self._waiting.clear()

    def _refit_later(self) -> None:
        with self._lock:
            self._maybe_fit()

    # -- the end ------------------------------------------------------------------------------
    def finish(self, *, force: bool = False) -> PostReport:
        """Compute what was not streamed, write the tables and the record; returns the report."""
        started = time.perf_counter()
        plan = self._cohort()
        previous = read_post_record(self.layout.root, self.model.model_id, self.report.params_hash)
        try:
            if (
                not force
                and previous is not None
                and record_is_current(self.layout, previous, plan.inputs)
            ):
                reuse(self.layout, self.report, previous)
                return self.report
            with self._lock:
                self._start()
                self._expected.clear()
                for p in plan.plans:  # calibration slides may have committed before the stream
                    if p.split == self.params.calibration_split and p.slide_id not in self._sweeps:
                        self._sweeps[p.slide_id] = self._pool.submit(
                            sweep_task, p, self.params, self.model.model_id
                        )
                for future in list(self._sweeps.values()):
                    future.result()
                self._maybe_fit(force=True)
                failed = {f.slide_id for f in self._failures}
                for p in plan.plans:
                    if p.slide_id not in failed:
                        self._submit_slide(p)
            results: list[SlideResult] = []
            failures = list(plan.failures) + self._failures
            for p in plan.plans:
                future = self._slides.get(p.slide_id)
                if future is None:
                    continue
                try:
                    outcome = future.result()
                except Exception as exc:  # noqa: BLE001 - one slide's failure, not the cohort's
                    outcome = FailureRecord.from_exception(
                        STAGE,
                        p.slide_id,
                        exc,
                        source_path=p.prediction,
                        model_id=self.model.model_id,
                    )
                if isinstance(outcome, SlideResult):
                    results.append(outcome)
                else:
                    failures.append(outcome)
            self.report.failures = failures
            superseded = previous or read_post_record(
                self.layout.root, self.model.model_id, self.report.params_hash, any_format=True
            )
            write_outputs(self.layout, self.report, plan, results, self._threshold_rows, superseded)
            return self.report
        finally:
            self._pool.shutdown(wait=True)
            self._blas.__exit__(None, None, None)
            self.report.seconds = time.perf_counter() - started
            self.report.timings = {
                "finish_s": self.report.seconds,
                "fit_at_s": self.fit_s or 0.0,
                "first_slide_row_at_s": self.first_result_s or 0.0,
            }


__all__ = ["PostStream"]
