"""cluster.yaml is a valid Ray cluster-launcher config and launches what SlideFleet needs.

Validated offline with Ray's own code, the two steps `ray up` runs before it talks to the cloud:
``prepare_config`` (merge the provider's defaults, fill node-type bounds) and ``validate_config``
(Ray's ``ray-schema.json`` plus its cross-field checks). Private API, pinned by the Ray version.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"
INSTALL_SLIDEFLEET = re.compile(r"\bpip install\b.*\s~/slidefleet\s*$")
INSTALL_TORCH = re.compile(r"\bpip install\b.*\btorch\b")


def _raw() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _prepared(config: dict[str, Any]) -> dict[str, Any]:
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def prepared() -> dict[str, Any]:
    return _prepared(_raw())


def _worker_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: t
        for name, t in config["available_node_types"].items()
        if name != config["head_node_type"]
    }


def _setup_commands(config: dict[str, Any], node_type: str) -> list[str]:
    """The setup commands a node of this type runs (after prepare_config merged the global ones)."""
    if node_type == config["head_node_type"]:
        return config["head_setup_commands"]
    return config["available_node_types"][node_type].get(
        "worker_setup_commands", config["worker_setup_commands"]
    )


def test_cluster_yaml_passes_rays_own_validation(prepared: dict[str, Any]) -> None:
    assert prepared["provider"]["type"] == "aws"
    assert prepared["provider"]["region"]
    # prepare_config fills keys we left out from Ray's AWS defaults; its default commands install
    # a nightly Ray wheel into a conda env, so none of them may leak into ours.
    every_command = "\n".join(
        cmd
        for key in (
            "initialization_commands",
            "setup_commands",
            "head_setup_commands",
            "worker_setup_commands",
            "head_start_ray_commands",
            "worker_start_ray_commands",
        )
        for cmd in prepared[key]
    )
    assert "ray-wheels" not in every_command
    assert "anaconda3" not in every_command


def test_head_is_cpu_only_and_gpu_workers_declare_gpus(prepared: dict[str, Any]) -> None:
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"].get("GPU") == 0, (
        "the head must declare GPU 0 so GPU actors never land on it"
    )
    assert head["max_workers"] == 0

    workers = _worker_types(prepared)
    gpu_types = {name: t for name, t in workers.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu_types, "no worker node type declares GPUs"
    for name, node_type in gpu_types.items():
        assert (
            0 <= node_type["min_workers"] <= node_type["max_workers"] <= prepared["max_workers"]
        ), name
        assert node_type["max_workers"] >= 1, name
        # Decode, not the GPU, is the usual bottleneck (DESIGN): several CPUs per GPU.
        assert node_type["resources"]["CPU"] / node_type["resources"]["GPU"] >= 4, name
        assert node_type["node_config"]["InstanceType"].startswith(("g5.", "g6.", "p4d.", "p5.")), (
            name
        )
    assert sum(t["min_workers"] for t in workers.values()) <= prepared["max_workers"]


def test_every_node_installs_slidefleet_after_torch(prepared: dict[str, Any]) -> None:
    assert prepared["file_mounts"].get("~/slidefleet") == ".", (
        "the checkout is synced to ~/slidefleet"
    )
    for node_type in prepared["available_node_types"]:
        commands = _setup_commands(prepared, node_type)
        installs = [i for i, cmd in enumerate(commands) if INSTALL_SLIDEFLEET.search(cmd)]
        torch = [i for i, cmd in enumerate(commands) if INSTALL_TORCH.search(cmd)]
        assert installs, f"{node_type}: setup does not install SlideFleet: {commands}"
        # torch first: the package's `torch>=2.4` range is then met by the build chosen here.
        assert torch, f"{node_type}: setup does not install torch: {commands}"
        assert torch[0] < installs[0], f"{node_type}: torch must be installed before SlideFleet"
    gpu_type = next(
        n for n, t in _worker_types(prepared).items() if t["resources"].get("GPU", 0) >= 1
    )
    gpu_torch = next(c for c in _setup_commands(prepared, gpu_type) if INSTALL_TORCH.search(c))
    assert "whl/cpu" not in gpu_torch, "GPU workers need a CUDA build of torch"


def test_cluster_runs_with_token_auth_and_this_ray_version(prepared: dict[str, Any]) -> None:
    starts = [
        c
        for key in ("head_start_ray_commands", "worker_start_ray_commands")
        for c in prepared[key]
        if "ray start" in c
    ]
    assert len(starts) == 2
    assert all("RAY_AUTH_MODE=token" in c for c in starts)
    assert prepared["file_mounts"].get("~/.ray") == "~/.ray", "the auth token must reach every node"
    images = [prepared["docker"]["image"], prepared["docker"]["head_image"]]
    images += [
        t["docker"]["worker_image"] for t in _worker_types(prepared).values() if "docker" in t
    ]
    for image in images:
        # Jobs are submitted by the local Ray client: keep the cluster on the same Ray release.
        assert image.startswith(f"rayproject/ray:{ray.__version__}-py311"), image


def _with_unknown_top_level_key(c: dict[str, Any]) -> None:
    c["max_worker"] = 3


def _with_unknown_node_type_key(c: dict[str, Any]) -> None:
    c["available_node_types"]["gpu_worker"]["gpus"] = 4


def _with_fractional_gpus(c: dict[str, Any]) -> None:
    c["available_node_types"]["gpu_worker"]["resources"]["GPU"] = 0.5


def _with_bad_head_type(c: dict[str, Any]) -> None:
    c["head_node_type"] = "no_such_type"


def _with_min_workers_over_max(c: dict[str, Any]) -> None:
    c["available_node_types"]["gpu_worker"]["min_workers"] = 9


@pytest.mark.parametrize(
    ("mutate", "error", "match"),
    [
        pytest.param(
            _with_unknown_top_level_key,
            jsonschema.ValidationError,
            "'max_worker' was unexpected",
            id="unknown-top-level-key",
        ),
        pytest.param(
            _with_unknown_node_type_key,
            jsonschema.ValidationError,
            "'gpus' was unexpected",
            id="unknown-node-type-key",
        ),
        pytest.param(
            _with_fractional_gpus,
            jsonschema.ValidationError,
            "not of type 'integer'",
            id="fractional-gpus",
        ),
        pytest.param(_with_bad_head_type, ValueError, "head_node_type", id="bad-head-type"),
        pytest.param(
            _with_min_workers_over_max, ValueError, "max_workers", id="min-workers-over-max"
        ),
    ],
)
def test_ray_rejects_a_broken_variant(mutate: Any, error: type[Exception], match: str) -> None:
    config = _raw()
    mutate(config)
    with pytest.raises(error, match=match):
        _prepared(config)
