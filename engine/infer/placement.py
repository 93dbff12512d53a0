"""Where scoring actors run: the device policy, the demand asked of the autoscaler, what is missing.

``choose_device`` decides GPU or CPU actors from what the cluster has *and what it can get*: GPUs
present now; the autoscaler's node types as Ray reports them (the cluster config in the GCS,
``ray._private.state.state.get_max_resources_from_cluster_config()``, which KubeRay and autoscaler v2
publish); and, where Ray reports no node types (the v1 autoscaler of ``ray up`` / ``ray start
--autoscaling-config``), the autoscaler's own answer to a one-GPU demand: a launch means a node type
has GPUs, a demand it saw and left unlaunched means none has. ``gpu`` never falls back to CPUs.

The demand (one bundle per wanted actor) is asked of the autoscaler with
``ray.autoscaler.sdk.request_resources`` and withdrawn when scoring ends; the pending actors
themselves are demand too, so a cluster whose autoscaler ignores the request still scales.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

import ray

from engine.errors import DeviceUnavailable
from engine.infer.params import InferParams

log = logging.getLogger(__name__)

_V1_STATUS_KEY = "__autoscaling_status"  # ray_constants.DEBUG_AUTOSCALING_STATUS
_POLL_S = 0.5


@dataclass(frozen=True)
class AutoscalerView:
    """What Ray reports about the autoscaler: which one runs, and the GPUs its node types allow."""

    kind: Literal["v1", "v2"] | None
    max_gpus: float | None  # from the node types Ray reports; None: not reported

    @property
    def present(self) -> bool:
        return self.kind is not None


@dataclass(frozen=True)
class DeviceChoice:
    """GPU or CPU actors, and why: goes into the run record and the printed summary."""

    requested: str
    device: Literal["gpu", "cpu"]
    reason: str
    gpus_in_cluster: float
    gpus_possible: float | None
    autoscaler: str | None

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ActorDemand:
    """How many actors are wanted, the Ray options of each, and its resource bundle."""

    count: int
    options: dict[str, float]

    @property
    def bundle(self) -> dict[str, float]:
        bundle = {"CPU": self.options["num_cpus"]}
        if self.options.get("num_gpus"):
            bundle["GPU"] = self.options["num_gpus"]
        return bundle

    def describe(self) -> str:
        return " + ".join(f"{v:g} {k}" for k, v in self.bundle.items())


def _v1_status() -> dict[str, Any] | None:
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_initialized

    if not _internal_kv_initialized():
        return None
    raw = _internal_kv_get(_V1_STATUS_KEY)
    return json.loads(raw) if raw else None


def _readonly(report: dict[str, Any] | None) -> bool:
    """A local Ray's or hand-made cluster's monitor runs a read-only autoscaler: it names each node
    ``node_<node id>`` (``format_readonly_node_type``) and can launch nothing."""
    if not report:
        return True
    mapping = report.get("node_type_mapping") or {}
    types = (
        set(mapping.values())
        | set(report.get("active_nodes") or {})
        | set(report.get("idle_nodes") or {})
    )
    return bool(types) and all(t.startswith("node_") for t in types)


def autoscaler_view() -> AutoscalerView:
    """Which autoscaler serves the connected cluster, and how many GPUs its node types allow."""
    max_gpus: float | None = None
    try:
        from ray._private.state import state

        limits = state.get_max_resources_from_cluster_config()
        if limits is not None:
            max_gpus = float(limits.get("GPU", 0))
    except Exception as exc:  # noqa: BLE001 - private API: informative only
        log.debug("no cluster config from the GCS: %s", exc)
    kind: Literal["v1", "v2"] | None = None
    try:
        from ray.autoscaler.v2.utils import is_autoscaler_v2

        if is_autoscaler_v2(fetch_from_server=True):
            kind = "v2"
    except Exception as exc:  # noqa: BLE001
        log.debug("autoscaler v2 flag unreadable: %s", exc)
    if kind is None:
        status = _v1_status()
        if status is not None and not _readonly(status.get("autoscaler_report")):
            kind = "v1"
    if kind is None and max_gpus is not None:
        kind = "v2"
    return AutoscalerView(kind, max_gpus)


def request_demand(bundle: dict[str, float], count: int) -> None:
    """Ask the autoscaler for ``count`` bundles (replaces this cluster's previous request)."""
    from ray.autoscaler.sdk import request_resources

    try:
        request_resources(bundles=[dict(bundle) for _ in range(count)])
    except Exception as exc:  # noqa: BLE001 - a cluster without an autoscaler still runs
        log.warning("could not ask the autoscaler for %d x %s: %s", count, bundle, exc)


def withdraw_demand() -> None:
    """Let the autoscaler scale the GPU nodes down once scoring is done."""
    if ray.is_initialized():
        request_demand({}, 0)


def _v1_answer(bundle: dict[str, float], since: float) -> bool | None:
    """True: launching for it; False: it saw the demand twice and launched nothing; None: not yet."""
    status = _v1_status()
    if status is None or status.get("time", 0) < since:
        return None
    report = status.get("autoscaler_report") or {}
    if report.get("pending_launches") or report.get("pending_nodes"):
        return True
    demands = status.get("load_metrics_report", {}).get("request_demand") or []
    seen = any(all(shape.get(k) == v for k, v in bundle.items()) for shape, _ in demands)
    return False if seen else None


def _v2_answer() -> bool | None:
    from ray._raylet import GcsClient
    from ray.core.generated.autoscaler_pb2 import GetClusterStatusReply

    reply = GetClusterStatusReply()
    reply.ParseFromString(
        GcsClient(ray.get_runtime_context().gcs_address).get_cluster_status(timeout_s=10)
    )
    state = reply.autoscaling_state
    if state.pending_instance_requests or state.pending_instances:
        return True
    if any(
        "GPU" in r.resources_bundle
        for c in state.infeasible_cluster_resource_constraints
        for rc in c.resource_requests
        for r in [rc.request]
    ):
        return False
    return None


def autoscaler_can_add_gpu(
    view: AutoscalerView, bundle: dict[str, float], timeout_s: float
) -> bool | None:
    """Ask for one GPU bundle and watch the autoscaler's answer (None: no answer in time)."""
    since = time.time()
    request_demand(bundle, 1)
    try:
        deadline = time.monotonic() + timeout_s
        # v1 needs two status updates after the one that first shows the request
        saw_unlaunched = 0
        while time.monotonic() < deadline:
            if ray.cluster_resources().get("GPU", 0) > 0:
                return True
            try:
                answer = _v1_answer(bundle, since) if view.kind == "v1" else _v2_answer()
            except Exception as exc:  # noqa: BLE001
                log.debug("autoscaler status unreadable: %s", exc)
                answer = None
            if answer is True:
                return True
            if answer is False:
                saw_unlaunched += 1
                status = _v1_status() if view.kind == "v1" else None
                since = status["time"] + 1e-6 if status else time.time()
                if saw_unlaunched >= 2:
                    return False
            time.sleep(_POLL_S)
        return None
    finally:
        withdraw_demand()


def choose_device(params: InferParams) -> DeviceChoice:
    """GPU or CPU actors for ``params.device`` on the connected cluster (see the module docstring)."""
    requested = params.device
    gpus_now = float(ray.cluster_resources().get("GPU", 0.0))
    if requested == "cpu":
        view = autoscaler_view()
        return DeviceChoice(requested, "cpu", "infer.device is cpu", gpus_now, None, view.kind)
    view = autoscaler_view()
    if gpus_now >= params.gpus_per_actor:
        return DeviceChoice(
            requested,
            "gpu",
            f"the cluster has {gpus_now:g} GPUs",
            gpus_now,
            view.max_gpus,
            view.kind,
        )
    if view.max_gpus is not None and view.max_gpus >= params.gpus_per_actor:
        return DeviceChoice(
            requested,
            "gpu",
            f"the autoscaler's node types allow up to {view.max_gpus:g} GPUs "
            f"(the cluster has {gpus_now:g} now)",
            gpus_now,
            view.max_gpus,
            view.kind,
        )
    if view.max_gpus is not None:
        reason = f"the autoscaler's node types allow {view.max_gpus:g} GPUs, fewer than infer.gpus_per_actor"
        return _no_gpu(requested, reason, gpus_now, view)
    if not view.present:
        reason = f"the cluster has {gpus_now:g} GPUs and no autoscaler that could add one"
        if (
            requested == "gpu"
        ):  # nodes may still be added by hand: wait for placement, then time out
            return DeviceChoice(
                requested, "gpu", reason + "; waiting for a GPU node to join", gpus_now, None, None
            )
        return DeviceChoice(requested, "cpu", reason, gpus_now, None, None)
    bundle = {"CPU": params.cpus_per_actor, "GPU": params.gpus_per_actor}
    answer = autoscaler_can_add_gpu(view, bundle, params.autoscaler_probe_s)
    if answer:
        return DeviceChoice(
            requested,
            "gpu",
            f"the {view.kind} autoscaler launches GPU nodes for a "
            f"{_fmt(bundle)} demand (the cluster has {gpus_now:g} GPUs now)",
            gpus_now,
            None,
            view.kind,
        )
    if answer is False:
        return _no_gpu(
            requested,
            f"the {view.kind} autoscaler has no node type that provides {_fmt(bundle)}",
            gpus_now,
            view,
        )
    reason = f"the {view.kind} autoscaler did not answer a {_fmt(bundle)} demand within {params.autoscaler_probe_s:g} s"
    if requested == "gpu":
        return DeviceChoice(
            requested, "gpu", reason + "; waiting for placement", gpus_now, None, view.kind
        )
    return DeviceChoice(requested, "cpu", reason, gpus_now, None, view.kind)


def _no_gpu(requested: str, reason: str, gpus_now: float, view: AutoscalerView) -> DeviceChoice:
    if requested == "gpu":
        raise DeviceUnavailable(
            f"infer.device is gpu but {reason}: add a GPU node type to the cluster, or set infer.device to "
            "auto or cpu to score on CPUs."
        )
    return DeviceChoice(requested, "cpu", reason, gpus_now, view.max_gpus, view.kind)


def _fmt(bundle: dict[str, float]) -> str:
    return " + ".join(f"{v:g} {k}" for k, v in bundle.items())


def actor_demand(choice: DeviceChoice, params: InferParams, work_units: int) -> ActorDemand:
    """Actors wanted, never more than there are work units.

    With an autoscaler: ``max_actors``, else every GPU its node types allow (capped by
    ``autoscale_max_actors``). On a fixed cluster: what it holds now (one per GPU, or per
    ``cpus_per_actor`` CPUs), at most ``max_actors``.
    """
    resources = ray.cluster_resources()
    by_cpu = int(float(resources.get("CPU", 1.0)) / params.cpus_per_actor + 1e-9)
    if choice.device == "gpu":
        options = {"num_gpus": params.gpus_per_actor, "num_cpus": params.cpus_per_actor}
        by_gpu = int(choice.gpus_in_cluster / params.gpus_per_actor + 1e-9)
        if choice.autoscaler is None:
            count = (
                min(by_gpu, by_cpu, params.max_actors or by_gpu) or 1
            )  # 0: wait for a GPU node to join
        elif params.max_actors is not None:
            count = params.max_actors
        elif choice.gpus_possible is not None:
            count = min(
                int(choice.gpus_possible / params.gpus_per_actor + 1e-9),
                params.autoscale_max_actors,
            )
        else:
            count = max(by_gpu, params.autoscale_max_actors)
    else:
        options = {"num_gpus": 0, "num_cpus": params.cpus_per_actor}
        if choice.autoscaler is None:
            count = min(by_cpu, params.max_actors or by_cpu)
        else:
            count = params.max_actors or by_cpu
    count = max(1, min(count, max(1, work_units)))
    return ActorDemand(count, options)


def missing_resources(demand: ActorDemand, placed: int, waited_s: float) -> str:
    """A sentence for an operator: what the unplaced actors need and what the cluster has."""
    total = ray.cluster_resources()
    have = ", ".join(f"{total.get(k, 0):g} {k}" for k in ("CPU", "GPU"))
    free = ray.available_resources()
    free_text = ", ".join(f"{free.get(k, 0):g} {k}" for k in ("CPU", "GPU"))
    view = autoscaler_view()
    scaler = (
        f"the {view.kind} autoscaler did not provide them"
        if view.present
        else "no autoscaler runs to add nodes"
    )
    return (
        f"{placed} of {demand.count} scoring actors placed after {waited_s:.0f} s; each needs "
        f"{demand.describe()}; the cluster has {have} ({free_text} free) and {scaler}. "
        "Add nodes with those resources, lower infer.gpus_per_actor / infer.cpus_per_actor, or raise "
        "infer.actor_start_timeout_s if nodes are slow to start."
    )
