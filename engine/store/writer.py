"""A bounded background writer: compress and write one block while the next one is read."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

import numpy as np
import zarr


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
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                self.drain()
        finally:
            self._executor.shutdown(wait=True, cancel_futures=exc_type is not None)
