"""A pool of scoring actors that join as the cluster places them.

Every wanted actor is created at once: the ones the cluster cannot hold yet stay pending, and those
pending actors are the demand the autoscaler sees. Units go only to placed actors, so a pending actor
never holds work; an actor placed later (a GPU node that finished booting) joins while the run goes
on. Waiting for the first actor is bounded by ``actor_start_timeout_s``; its expiry is a
:class:`PlacementTimeout` naming what was missing, never a hang.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import ray

from engine.errors import PlacementTimeout
from engine.infer.placement import ActorDemand, missing_resources

log = logging.getLogger(__name__)


class ActorPool:
    def __init__(self, spawn: Callable[[int], Any], demand: ActorDemand) -> None:
        self._spawn = spawn
        self.demand = demand
        self.actors: list[Any] = []
        self.ready: list[bool] = []
        self.load: list[int] = []
        self.placements: list[dict[str, Any] | None] = []
        self._placing: dict[Any, int] = {}
        self._spawned = 0
        self.started = time.perf_counter()
        self.first_ready_s: float | None = None  # scale-up wait: pool start -> first placed actor
        self.joined_late = 0  # actors placed after the first unit was dispatched
        self.replacements = 0
        self.dispatching = False
        for _ in range(demand.count):
            self.actors.append(None)
            self.ready.append(False)
            self.load.append(0)
            self.placements.append(None)
            self._start(len(self.actors) - 1)

    def _start(self, index: int) -> None:
        handle = self._spawn(self._spawned)
        self._spawned += 1
        self.actors[index] = handle
        self.ready[index] = False
        self.load[index] = 0
        self.placements[index] = None
        self._placing[handle.placement.remote()] = index

    @property
    def placing(self) -> list[Any]:
        return list(self._placing)

    def is_placement(self, ref: Any) -> bool:
        return ref in self._placing

    @property
    def n_ready(self) -> int:
        return sum(self.ready)

    def on_placed(self, ref: Any) -> None:
        """A placement call returned: the actor joins, or (it died starting) is started again."""
        index = self._placing.pop(ref)
        try:
            placement = ray.get(ref)
        except ray.exceptions.RayError as exc:
            log.warning(
                "scoring actor %d died while starting (%s); starting another",
                index,
                type(exc).__name__,
            )
            self.replacements += 1
            self._start(index)
            return
        self.ready[index] = True
        self.placements[index] = placement
        if self.first_ready_s is None:
            self.first_ready_s = time.perf_counter() - self.started
        if self.dispatching:
            self.joined_late += 1
            log.info("scoring actor %d joined the pool on node %s", index, placement.get("node_id"))

    def replace(self, index: int) -> None:
        """An actor died for good: start a new one in its slot (it joins once placed)."""
        self.replacements += 1
        self._start(index)

    def unit_done(self, index: int, actor: Any) -> None:
        """A unit sent to ``actor`` came back (its slot may hold a replacement by now)."""
        if self.actors[index] is actor:
            self.load[index] -= 1

    def pick(self, limit: int) -> int | None:
        """The placed actor with the fewest queued units, if it has room."""
        candidates = [i for i, ok in enumerate(self.ready) if ok and self.load[i] < limit]
        return min(candidates, key=lambda i: self.load[i]) if candidates else None

    def wait_for(self, n: int, timeout_s: float) -> None:
        """Block until ``n`` actors (at most all) are placed; PlacementTimeout names what was missing."""
        deadline = time.monotonic() + timeout_s
        while self.n_ready < min(n, len(self.actors)):
            left = deadline - time.monotonic()
            if left <= 0 or not self._placing:
                raise PlacementTimeout(
                    missing_resources(self.demand, self.n_ready, time.perf_counter() - self.started)
                )
            done, _ = ray.wait(self.placing, num_returns=1, timeout=left)
            for ref in done:
                self.on_placed(ref)

    def shutdown(self) -> list[dict[str, Any]]:
        """Stats of every placed actor; then every actor, placed or pending, is killed."""
        stats: list[dict[str, Any]] = []
        alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        for index, actor in enumerate(self.actors):
            if self.ready[index]:
                try:
                    record = ray.get(actor.stats.remote(), timeout=60)
                    # A worker of a node just lost can still answer for a moment: it is dead.
                    if record.get("node_id") and record["node_id"] not in alive:
                        record = {**record, "dead": True}
                    stats.append(record)
                except ray.exceptions.RayError:
                    stats.append({**(self.placements[index] or {}), "dead": True})
            with contextlib.suppress(Exception):  # already gone
                ray.kill(actor)
        return stats
