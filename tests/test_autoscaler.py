"""``slidefleet run --address`` on Ray's real autoscaler with fake nodes (no mocks of Ray).

The cluster starts with a CPU-only head (``GPU: 0``) and a ``gpu_node`` type at ``min_workers: 0``:
no GPU exists when the run starts. The engine must see that the autoscaler can add GPUs, ask for
them, score only on GPU worker nodes, and write the maps a single-node run writes. The cluster is
torn down in a ``finally`` even when the run fails (see ``engine.bench.fake_cluster``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from engine.bench.fake_cluster import HEAD_NODE_ID, fake_cluster, port_in_use
from engine.infer import InferParams, infer
from engine.ingest import ingest
from tests.infer_models import Darkness, darkness_card, register

pytestmark = pytest.mark.slow  # a head, two fake GPU nodes and a whole run: ~1-2 min on 2 cores

SLIDEFLEET = Path(sys.executable).with_name("slidefleet")
REPO = Path(__file__).resolve().parents[1]


def _maps(root: Path, model_id: str) -> dict[str, np.ndarray]:
    return {
        p.name: np.asarray(zarr.open_group(p, mode="r")["0"][:])
        for p in sorted((root / "predictions" / model_id).glob("*.zarr"))
    }


def test_run_scales_up_gpu_nodes_and_scores_only_on_them(tmp_path: Path, ray_session) -> None:
    from engine.synth import generate_cohort

    if port_in_use():
        pytest.fail(
            "port 6379 is taken: the fake autoscaler's head needs it (is another Ray head running?)"
        )
    manifest = generate_cohort(tmp_path / "cohort", 2, seed=3, width_px=1024, height_px=1024)
    infer_section = {"unit_tiles": 2, "max_actors": 2}

    # The single-node reference, in this process's local Ray.
    reference = tmp_path / "reference"
    assert not ingest(manifest, reference, progress=False).failures
    model = register(reference, Darkness(), darkness_card("darkness"))
    assert not infer(
        reference, model.ref, params=InferParams(**infer_section), progress=False
    ).failures

    root = tmp_path / "fleet"
    register(root, Darkness(), darkness_card("darkness"))
    config = tmp_path / "job.json"
    config.write_text(
        json.dumps({"views": False, "post": {"fallback_threshold": 0.5}, "infer": infer_section})
    )
    with fake_cluster(
        head_cpus=2, gpu_nodes=2
    ) as cluster:  # ingest fits the head: no GPU before infer
        run = subprocess.run(
            [
                str(SLIDEFLEET),
                "run",
                str(manifest),
                "--model",
                "darkness",
                "--root",
                str(root),
                "--config",
                str(config),
                "--address",
                cluster.address,
                "--quiet",
            ],
            env=cluster.client_env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + cluster.log_tail()

    (record_path,) = (root / "runs").glob("*.json")
    stage = json.loads(record_path.read_text())["stages"][f"infer:{model.ref}"]
    assert stage["device"]["device"] == "gpu", stage["device"]
    assert "autoscaler" in stage["device"]["reason"] and stage["device"]["gpus_in_cluster"] == 0
    assert "device gpu" in run.stdout  # the printed summary says which device and why
    actors = stage["actors"]
    assert actors and stage["actors_wanted"] == 2
    for actor in actors:  # every scoring actor on a GPU worker node the autoscaler started
        assert actor["node_id"] != HEAD_NODE_ID and actor["gpu_ids"], actor
    assert stage["scale_up_wait_s"] is not None

    want, got = _maps(reference, model.model_id), _maps(root, model.model_id)
    assert want and sorted(want) == sorted(got)
    for name, array in want.items():
        np.testing.assert_array_equal(got[name], array, err_msg=name)
