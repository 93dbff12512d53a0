"""Several Ray nodes on this machine (``ray.cluster_utils.Cluster``): work placed by resources, and
nodes lost mid-ingest and mid-infer (a spot reclaim) without losing or changing anything.

The head declares no CPU and no GPU, so every task and actor runs on a worker node, which the test
can remove. The session's local Ray (``ray_session``) is shut down for this module and started
again afterwards, exactly as conftest starts it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray
import zarr
from ray.cluster_utils import Cluster

from engine.infer import InferParams, infer
from engine.ingest import ingest
from engine.tables import read_failures
from tests.infer_models import Darkness, darkness_card, register

pytestmark = pytest.mark.slow  # starts four Ray nodes: ~1-2 min on 2 busy cores

PARAMS = InferParams(unit_tiles=2, max_actors=1, in_flight_per_actor=1)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    had_session = ray.is_initialized()
    if had_session:
        ray.shutdown()
    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "num_gpus": 0})
    try:
        for name in ("w1", "w2"):
            made.add_node(num_cpus=1, num_gpus=1, resources={name: 1})
        made.wait_for_nodes()
        ray.init(address=made.address, log_to_driver=False)
        yield made
    finally:
        ray.shutdown()
        made.shutdown()
        if had_session:  # as conftest's ray_session made it
            ray.init(
                address="local",
                num_cpus=2,
                num_gpus=2,
                include_dashboard=False,
                log_to_driver=False,
            )


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine.synth import generate_cohort

    return generate_cohort(
        tmp_path_factory.mktemp("cluster-cohort"), 2, seed=5, width_px=1536, height_px=1024
    )


def _worker_holding(cluster: Cluster, node_id: str):
    return next(n for n in cluster.worker_nodes if n.node_id == node_id)


def _arrays(root: Path, pattern: str) -> dict[str, np.ndarray]:
    found = {}
    for path in sorted(root.glob(pattern)):
        found[str(path.relative_to(root))] = np.asarray(zarr.open_array(path, mode="r")[:])
    return found


def test_no_address_starts_a_ray_of_its_own_beside_a_running_cluster(cluster: Cluster) -> None:
    """With no address, the engine starts its own local Ray; it never joins the cluster that
    ``ray start`` (here ``Cluster``) last recorded on this machine, which ``ray.init()`` would."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    code = (
        "import ray; from engine.cluster import ensure_ray; ensure_ray(num_cpus=1); "
        "print(ray.get_runtime_context().gcs_address)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=True,
    )
    started = done.stdout.strip().splitlines()[-1]
    assert started and started != cluster.address


def test_post_tasks_spread_over_the_worker_nodes(cluster: Cluster) -> None:
    """Post's Dask-on-Ray executor runs a cohort's slide tasks on every worker node, not one."""
    import dask

    from engine.post.dask_cluster import RayExecutor

    @dask.delayed
    def where_it_ran(slide: int) -> str:
        time.sleep(0.2)  # a slide's task takes seconds; long enough that packing would show
        return ray.get_runtime_context().get_node_id()

    workers = {node.node_id for node in cluster.worker_nodes}
    ran_on = RayExecutor().compute([where_it_ran(i) for i in range(8)])
    assert set(ran_on) == workers, ran_on


def test_nodes_lost_mid_ingest_and_mid_infer_change_nothing(
    cluster: Cluster, cohort: Path, tmp_path: Path
) -> None:
    # Reference: the same cohort on the same cluster, undisturbed.
    reference = tmp_path / "reference"
    assert not ingest(cohort, reference, progress=False).failures
    model = register(reference, Darkness(), darkness_card("darkness"))
    reference_infer = infer(reference, model.ref, params=PARAMS, progress=False)
    assert not reference_infer.failures and reference_infer.tiles > 0
    # Every scoring actor ran on a GPU node (the head has none).
    assert all(
        a["gpu_ids"] and a["node_id"] != cluster.head_node.node_id for a in reference_infer.actors
    )

    # Mid-ingest: both slides convert at once (one per worker, SPREAD); a worker goes away.
    disturbed = tmp_path / "disturbed"
    result: dict[str, object] = {}
    thread = threading.Thread(
        target=lambda: result.update(report=ingest(cohort, disturbed, progress=False))
    )
    thread.start()
    deadline = time.monotonic() + 120
    while not list((disturbed / "slides").glob(".*.tmp-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    lost = next(iter(cluster.worker_nodes))
    cluster.remove_node(lost, allow_graceful=False)
    cluster.add_node(num_cpus=1, num_gpus=1, resources={"w3": 1})  # the spot replacement
    thread.join(timeout=300)
    ingested = result["report"]
    assert not ingested.failures, [f.message for f in ingested.failures]  # type: ignore[attr-defined]
    assert len(ingested.converted) == 2  # type: ignore[attr-defined]

    # Mid-infer: the node holding the only actor goes away after its first unit.
    register(disturbed, Darkness(), darkness_card("darkness"))
    removed: list[str] = []

    def lose_the_actors_node(stats, actors) -> None:
        if not removed:
            node_id = ray.get(actors[0].placement.remote())["node_id"]
            removed.append(node_id)
            cluster.remove_node(_worker_holding(cluster, node_id), allow_graceful=False)

    disturbed_infer = infer(
        disturbed, model.ref, params=PARAMS, progress=False, on_unit_done=lose_the_actors_node
    )
    assert removed and not disturbed_infer.failures
    assert disturbed_infer.tiles == reference_infer.tiles
    # Not asserted: which node each actor's final stats name. A worker of the removed node can
    # still answer for a moment (seen once in a loaded CI run); the pool now marks such records
    # dead, but that race is not yet understood well enough to assert on (open, see #11 note).

    # Identical outputs, nothing lost, nothing half-written trusted.
    for pattern in ("slides/*.ome.zarr/0", "predictions/*/*.zarr/0"):
        want, got = _arrays(reference, pattern), _arrays(disturbed, pattern)
        assert want and sorted(want) == sorted(got)
        for name, array in want.items():
            np.testing.assert_array_equal(got[name], array, err_msg=name)
    assert read_failures(disturbed / "tables").num_rows == 0
