"""Views fed slide by slide, for a streaming run: a slide is drawn as soon as post has its rows.

:class:`engine.post.stream.PostStream` calls :meth:`ViewStream.posted` with each slide's
``slides`` and ``regions`` rows the moment its per-slide pass is done; the slide's heatmap,
panel, GeoJSON and gallery are then drawn by :func:`engine.views.api.draw_slide`, the very
function ``render_views`` runs for each slide, as a Ray task spread over the cluster (the run's
Ray is up). Those rows are the ones post writes to its tables, so a streamed
slide's pictures equal a staged run's. :meth:`ViewStream.finish` hands what was drawn to
``render_views``, which draws only the slides the stream did not (scored by earlier runs, or
posted at the end) and writes the cohort's galleries, failures and report.

At most ``max_in_flight`` slides are drawn at once, each task reserving ``cpus_per_task``; the
others wait here, in the order post finished them. On a single machine the run gives views a
token CPU (as its scoring actors), so slides are drawn beside ingest as post finishes them and
share the cores through the OS instead of queuing behind every conversion.
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
from engine.views.api import Drawn, draw_task, ray_outcome, view_context
from engine.views.inputs import PostResults
from engine.views.params import ViewParams

log = logging.getLogger(__name__)


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
        self._idle = threading.Condition(self._lock)
        self._waiting: deque[tuple[str, PostResults]] = deque()
        self._in_flight: dict[str, Any] = {}  # slide_id -> its Ray task
        self._drawn: dict[str, Drawn] = {}
        self._closed = False
        self.first_view_s: float | None = None
        """Seconds from ``clock_origin`` to the first slide's views written."""

    def posted(self, result: SlideResult) -> None:
        """Post computed this slide's rows: draw it (now, or when a drawing slot frees)."""
        rows = PostResults(slides=[result.row], regions=result.regions, record=self._record)
        with self._lock:
            if self._closed or result.slide_id in self._drawn or result.slide_id in self._in_flight:
                return
            self._waiting.append((result.slide_id, rows))
            self._submit_waiting()

    def _submit_waiting(self) -> None:
        while self._waiting and len(self._in_flight) < self._max_in_flight:
            slide_id, rows = self._waiting.popleft()
            ref = draw_task(self.context, rows, slide_id, num_cpus=self._cpus_per_task)
            self._in_flight[slide_id] = ref
            threading.Thread(
                target=self._await_ref, args=(slide_id, ref), daemon=True, name="views-wait"
            ).start()

    def _await_ref(self, slide_id: str, ref: Any) -> None:
        self._landed(slide_id, ray_outcome(slide_id, ref))

    def _landed(self, slide_id: str, drawn: Drawn) -> None:
        with self._lock:
            self._in_flight.pop(slide_id, None)
            self._drawn[slide_id] = drawn
            if self.first_view_s is None and not isinstance(drawn[0], FailureRecord):
                self.first_view_s = time.perf_counter() - self._origin
            if not self._closed:
                self._submit_waiting()
            self._idle.notify_all()

    def finish(self) -> list[Drawn]:
        """Wait for every slide handed over; their outcomes, in the order they were drawn."""
        with self._idle:
            self._idle.wait_for(lambda: not self._waiting and not self._in_flight)
            self._closed = True
        return list(self._drawn.values())


__all__ = ["ViewStream"]
