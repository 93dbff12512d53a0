"""A bounded hand-over of committed slide stores to a running ``infer`` (streaming runs).

The producer (ingest) ``put``s each store as it commits and blocks while ``maxsize`` stores wait:
that is the backpressure between ingest and infer, so slides queue on disk, not in memory. The
consumer (the infer driver) drains it between work units. ``close`` says no more will come;
``abandon`` (the consumer is gone) makes ``put`` drop instead of blocking forever.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path


class SlideFeed:
    def __init__(self, maxsize: int = 4) -> None:
        self._queue: queue.Queue[Path] = queue.Queue(maxsize=max(1, maxsize))
        self._closed = threading.Event()
        self._abandoned = threading.Event()

    def put(self, store_path: Path | str) -> bool:
        """Hand over one store; blocks while the feed is full. False if the consumer is gone."""
        while not self._abandoned.is_set():
            try:
                self._queue.put(Path(store_path), timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def close(self) -> None:
        self._closed.set()

    def abandon(self) -> None:
        self._abandoned.set()

    @property
    def exhausted(self) -> bool:
        """Closed and nothing left to take."""
        return self._closed.is_set() and self._queue.empty()

    def drain(self, *, block: bool, timeout: float = 0.5) -> list[Path]:
        """Everything waiting now; with ``block``, wait up to ``timeout`` for the first one."""
        taken: list[Path] = []
        if block and not self.exhausted:
            try:
                taken.append(self._queue.get(timeout=timeout))
            except queue.Empty:
                return taken
        while True:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                return taken

    def waiting(self) -> int:
        return self._queue.qsize()
