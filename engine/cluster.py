"""Connecting to Ray: the one place that decides between a local Ray and a cluster."""

from __future__ import annotations

import logging
import os

import ray

log = logging.getLogger(__name__)


def ensure_ray(
    address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None
) -> None:
    """Join the Ray cluster at ``address`` (or ``RAY_ADDRESS``), or start a local Ray.

    A Ray already initialised in this process (tests, notebooks, Ray Jobs) is reused as it is.
    """
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        log.info("joining Ray cluster at %s", address)
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        return
    log.info("starting a local Ray (num_cpus=%s, num_gpus=%s)", num_cpus, num_gpus)
    # address="local": always a Ray of our own. Without it ray.init joins the last cluster that
    # `ray start` recorded on this machine (/tmp/ray/ray_current_cluster), someone else's run.
    ray.init(
        address="local",
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=False,
        logging_level=logging.WARNING,
        configure_logging=True,
    )
