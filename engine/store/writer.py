"""A bounded background writer: compress and write one block while the next one is read."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

import numpy as np
import zarr

log = logging.getLogger(__name__)


def settle_zarr_writes(timeout_s: float = 60.0) -> None:
    """Wait until zarr's I/O loop has no chunk write in flight (at most ``timeout_s``).

    When one chunk write of an assignment fails (e.g. ``ENOSPC``), zarr re-raises at once while the
    assignment's other chunk writes keep running on its I/O loop; each creates its parent folders,
    so deleting a temporary store right after the error lets them re-create it. Call this before
    deleting a store that was being written.
    """
    from zarr.core import sync as zarr_sync

    loop = zarr_sync.loop[0]
    if loop is None or loop.is_closed() or not loop.is_running():
        return

    async def _settle() -> None:
        current = asyncio.current_task()
        while others := [t for t in asyncio.all_tasks() if t is not current and not t.done()]:
            await asyncio.wait(others)

    future = asyncio.run_coroutine_threadsafe(_settle(), loop)
    try:
        future.result(timeout=timeout_s)
    except TimeoutError:
        future.cancel()
        log.warning("zarr writes still in flight after %.0f s; cleaning up anyway", timeout_s)


class BackgroundWriter:
    """Writes ``array[selection] = block`` on a worker thread, at most ``max_pending`` queued.

    Reading (OpenSlide's C decoder) and compressing (zstd) both release the GIL, so the two
    overlap; the bound keeps memory at ``max_pending + 1`` blocks whatever the slide size.
    Errors surface on the next ``submit`` or on exit.
    """

    def __init__(self, max_pending: int = 2) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zarr-writer")
        self._pending: deque[Future[None]] = deque()
        self._max_pending = max_pending

    def submit(self, array: zarr.Array[Any], selection: tuple[Any, ...], block: np.ndarray) -> None:
        while len(self._pending) >= self._max_pending:
            self._pending.popleft().result()
        self._pending.append(self._executor.submit(array.__setitem__, selection, block))

    def drain(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self.drain()
        finally:
            self._executor.shutdown(wait=True, cancel_futures=exc_type is not None)
