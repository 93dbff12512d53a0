"""Where post's Dask graphs run: a dask.distributed cluster (local or joined), Ray, or in-process.

The cohort code builds ``dask.delayed`` graphs and hands them to a :class:`SlideExecutor`; which
scheduler runs them is decided here, once (see :class:`engine.post.params.PostExecution`). Every
executor returns, for each task, its value or the exception that escaped it, so one lost worker
becomes one slide's failure rather than the cohort's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, Protocol

from dask.delayed import Delayed

from engine.post.params import PostExecution

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


class SlideExecutor(Protocol):
    """Computes delayed tasks; ``description`` names the scheduler in logs and reports."""

    description: str

    def compute(self, tasks: Sequence[Delayed], progress: Progress | None = None) -> list[Any]:
        """Each task's value, or the exception it raised, in task order."""
        ...


class SyncExecutor:
    """In this process, one task after another (small cohorts, debugging)."""

    description = "dask sync scheduler (in-process)"

    def compute(self, tasks: Sequence[Delayed], progress: Progress | None = None) -> list[Any]:
        out: list[Any] = []
        with _one_blas_thread():
            for task in tasks:
                try:
                    out.append(task.compute(scheduler="sync"))
                except Exception as exc:
                    out.append(exc)
                if progress:
                    progress(1)
        return out


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """One BLAS/OpenMP thread while slides run here, as on a worker (measured 2x faster).

    A slide's arrays are too small for threaded BLAS to pay; its threads only contend. Uses
    threadpoolctl when it is installed (it comes with scikit-learn), else changes nothing.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with the test extras
        yield
        return
    with threadpool_limits(limits=1):
        yield


class DistributedExecutor:
    """A ``dask.distributed`` client: tasks become futures, gathered as they finish."""

    def __init__(self, client: Any, description: str) -> None:
        self.client = client
        self.description = description

    def compute(self, tasks: Sequence[Delayed], progress: Progress | None = None) -> list[Any]:
        from distributed import as_completed

        futures = self.client.compute(list(tasks))
        index = {f.key: i for i, f in enumerate(futures)}
        out: list[Any] = [None] * len(futures)
        for future in as_completed(futures, loop=self.client.loop):
            try:
                out[index[future.key]] = future.result()
            except Exception as exc:  # KilledWorker, a task that escaped its own handler
                out[index[future.key]] = exc
            future.release()
            if progress:
                progress(1)
        return out


class RayExecutor:
    """Dask-on-Ray: the same graphs, scheduled as Ray tasks spread over the cluster's nodes.

    ``SPREAD`` because a slide's task reads its stores and computes for seconds: packed onto the
    driver's node (Ray's default prefers it), a cohort would leave the other nodes idle. A task
    lost with its node is retried elsewhere (Ray's task retries), so a spot reclaim costs time only.
    """

    description = "Dask-on-Ray (ray.util.dask.ray_dask_get), tasks spread over nodes"
    remote_args: ClassVar[dict[str, Any]] = {"scheduling_strategy": "SPREAD", "max_retries": 2}

    def compute(self, tasks: Sequence[Delayed], progress: Progress | None = None) -> list[Any]:
        import ray
        from ray.util.dask import ray_dask_get

        graph: dict[Any, Any] = {}
        for task in tasks:
            graph.update(task.__dask_graph__())
        # ray_persist: Ray object refs come back at once, so results can be taken as they finish.
        refs = ray_dask_get(
            graph,
            [task.key for task in tasks],
            ray_persist=True,
            ray_remote_args=dict(self.remote_args),
        )
        pending = {ref: i for i, ref in enumerate(refs)}
        out: list[Any] = [None] * len(refs)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                try:
                    out[i] = ray.get(ref)
                except Exception as exc:
                    out[i] = getattr(exc, "cause", None) or exc
                if progress:
                    progress(1)
        return out


def _warm_up() -> None:
    import engine.post.slide_task  # noqa: F401  (zarr, scipy, scikit-image, metrics)


def _quiet_distributed_logs() -> None:
    for name in (
        "distributed",
        "distributed.scheduler",
        "distributed.nanny",
        "distributed.worker",
        "distributed.core",
        "distributed.http.proxy",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)


LOCAL_CLUSTER_MIN_SLIDES = 32
"""Below this many slides ``auto`` runs in-process: their work (~50 ms a slide, measured) is
shorter than a local cluster's start (~3 s)."""


def resolve_scheduler(execution: PostExecution, n_slides: int) -> str:
    """The scheduler ``auto`` stands for: Ray when Ray is up or addressed, else by cohort size."""
    if execution.scheduler != "auto":
        return execution.scheduler
    ray = sys.modules.get("ray")  # no import: an unused Ray must not cost its import time
    if (ray is not None and ray.is_initialized()) or os.environ.get("RAY_ADDRESS"):
        return "ray"
    return "sync" if n_slides < LOCAL_CLUSTER_MIN_SLIDES else "processes"


@contextlib.contextmanager
def open_executor(
    execution: PostExecution,
    *,
    n_slides: int,
    dask_address: str | None = None,
    ray_address: str | None = None,
) -> Iterator[SlideExecutor]:
    """The executor ``execution`` asks for; ``dask_address`` joins that Dask scheduler instead.

    A local cluster lives as long as the ``with`` block; a joined one is left running.
    """
    _quiet_distributed_logs()
    if dask_address:
        from distributed import Client

        with Client(dask_address, set_as_default=False) as client:
            yield DistributedExecutor(client, f"dask.distributed scheduler at {dask_address}")
        return
    scheduler = resolve_scheduler(execution, n_slides)
    if scheduler == "sync":
        yield SyncExecutor()
        return
    if scheduler == "ray":
        from engine.cluster import ensure_ray

        ensure_ray(ray_address)
        yield RayExecutor()
        return
    import dask
    from distributed import Client, LocalCluster

    n_workers = execution.n_workers or os.cpu_count() or 1
    processes = scheduler == "processes"
    # Worker settings, measured on post's tasks: the statistical profiler costs CPU on every task
    # and nobody reads it here; the nanny's default MALLOC_TRIM_THRESHOLD_=65536 makes every
    # slide's temporary arrays fresh mmaps (1.8x slower per slide), so it is left unset, while
    # BLAS/OpenMP stay at one thread per single-threaded worker.
    environ = {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1}
    with dask.config.set(
        {
            "distributed.worker.profile.enabled": False,
            "distributed.nanny.pre-spawn-environ": environ,
        }
    ):
        cluster = LocalCluster(
            n_workers=n_workers if processes else 1,
            threads_per_worker=1 if processes else n_workers,
            processes=processes,
            memory_limit=execution.memory_limit,
            dashboard_address=None,
            silence_logs=logging.WARNING,
        )
    try:
        with Client(cluster, set_as_default=False) as client:
            client.run(_warm_up)  # imports on every worker now, not inside the first tasks
            kind = f"{n_workers} worker processes" if processes else f"{n_workers} threads"
            yield DistributedExecutor(client, f"dask.distributed LocalCluster, {kind}")
    finally:
        cluster.close()
