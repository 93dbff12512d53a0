"""Views fed slide by slide, for a streaming run: a slide is drawn as soon as post has its rows.

:class:`engine.post.stream.PostStream` calls :meth:`ViewStream.posted` with each slide's
``slides`` and ``regions`` rows the moment its per-slide pass is done (slides posted while post
finishes included); the slide's heatmap, panel, GeoJSON and gallery are then drawn by
:func:`engine.views.api.draw_slide`, the very function ``render_views`` runs for each slide, as
a Ray task spread over the cluster (the run's Ray is up). Those rows are the ones post writes
to its tables, so a streamed slide's pictures equal a staged run's. :meth:`ViewStream.finish`
hands what was drawn, each with the row it was drawn from, to ``render_views``, which keeps a
drawing only where post's tables hold that row and draws every other slide itself (scored by
earlier runs, still queued here, or whose task was lost), then writes the cohort's galleries,
failures and report.

At most ``max_in_flight`` slides are drawn at once, each task reserving ``cpus_per_task``; the
others wait here, in the order post finished them. On a single machine the run gives views a
token CPU (as its scoring actors), so slides are drawn beside ingest as post finishes them and
share the cores through the OS instead of queuing behind every conversion. One waiter thread
collects finished tasks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from engine.post.params import PostParams
from engine.post.slide_task import SlideResult
from engine.tables import FailureRecord
from engine.views.api import Drawn, StreamedViews, draw_task, view_context
from engine.views.inputs import PostResults
from engine.views.params import ViewParams

log = logging.getLogger(__name__)

_POLL_S = 0.2


class ViewStream:
    """One model's per-slide views, drawn while the run goes on; thread-safe."""

    def __init__(
        self,
        root: Path | str,
        model: str,
        *,
        params: ViewParams,
        post_params: PostParams,
        max_in_flight: int = 2,
        cpus_per_task: float = 1.0,
        clock_origin: float | None = None,
    ) -> None:
        self._record = {"params": post_params.model_dump(mode="json", exclude={"execution"})}
        self.context = view_context(root, model, params, PostResults(record=self._record))
        self._max_in_flight = max(1, max_in_flight)
        self._cpus_per_task = cpus_per_task
        self._origin = clock_origin if clock_origin is not None else time.perf_counter()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._waiting: deque[SlideResult] = deque()
        self._in_flight: dict[Any, SlideResult] = {}  # Ray ref -> the rows it draws
        self._drawn: dict[str, StreamedViews] = {}
        self._seen: set[str] = set()
        self._closed = False
        self._waiter: threading.Thread | None = None
        self.first_view_s: float | None = None
        """Seconds from ``clock_origin`` to the first slide's views written."""

    def posted(self, result: SlideResult) -> None:
        """Post computed this slide's rows: draw it (now, or when a drawing slot frees)."""
        with self._lock:
            if self._closed or result.slide_id in self._seen:
                return
            self._seen.add(result.slide_id)
            self._waiting.append(result)
            self._submit_waiting()

    def _submit_waiting(self) -> None:
        """Start queued slides while slots are free (lock held). A slide whose task cannot be
        submitted is left to ``render_views``."""
        while self._waiting and len(self._in_flight) < self._max_in_flight:
            result = self._waiting.popleft()
            rows = PostResults(slides=[result.row], regions=result.regions, record=self._record)
            try:
                ref = draw_task(self.context, rows, result.slide_id, num_cpus=self._cpus_per_task)
            except Exception:  # noqa: BLE001 - drawn at the end instead
                log.exception("cannot start the views of %s; drawn at the end", result.slide_id)
                continue
            self._in_flight[ref] = result
        if self._in_flight and self._waiter is None:
            self._waiter = threading.Thread(target=self._wait, daemon=True, name="views-stream")
            self._waiter.start()
        self._changed.notify_all()

    def _wait(self) -> None:
        import ray

        while True:
            with self._lock:
                self._changed.wait_for(lambda: bool(self._in_flight) or self._closed)
                refs = list(self._in_flight)
                if not refs:
                    return  # closed and nothing in flight
            try:
                ready, _ = ray.wait(refs, num_returns=1, timeout=_POLL_S)
            except Exception:  # noqa: BLE001 - Ray gone: what is in flight is drawn at the end
                log.exception("views stream lost its tasks")
                ready = refs
            for ref in ready:
                try:
                    drawn: Drawn | None = ray.get(ref)
                except Exception:  # noqa: BLE001 - task lost (its node died, twice): redrawn at the end
                    log.warning("views task lost; drawn at the end", exc_info=True)
                    drawn = None
                with self._lock:
                    result = self._in_flight.pop(ref)
                    if drawn is not None:
                        self._drawn[result.slide_id] = StreamedViews(
                            result.slide_id, result.row, drawn
                        )
                        if self.first_view_s is None and not isinstance(drawn[0], FailureRecord):
                            self.first_view_s = time.perf_counter() - self._origin
                    if not self._closed:
                        self._submit_waiting()
                    self._changed.notify_all()

    def finish(self) -> list[StreamedViews]:
        """Stop taking slides, wait for those being drawn; what was drawn (slides still queued,
        and those whose task was lost, are left for ``render_views``)."""
        with self._lock:
            self._closed = True
            self._waiting.clear()
            self._changed.notify_all()
            self._changed.wait_for(lambda: not self._in_flight)
        if self._waiter is not None:
            self._waiter.join()
        return list(self._drawn.values())

    def abandon(self) -> None:
        """The run failed: stop taking slides and cancel the tasks in flight."""
        import ray

        with self._lock:
            self._closed = True
            self._waiting.clear()
            refs = list(self._in_flight)
            self._changed.notify_all()
        for ref in refs:
            try:
                ray.cancel(ref)
            except Exception:  # noqa: BLE001 - best effort on a failing run
                log.debug("could not cancel a views task", exc_info=True)


__all__ = ["ViewStream"]
