"""Ray's real autoscaler with fake nodes on this machine, for tests and ``slidefleet bench cluster``.

``RAY_FAKE_CLUSTER=1 ray start --head --port 6379 --autoscaling-config CFG --block`` with provider
``fake_multinode``: the real v1 autoscaler launches and removes worker nodes as local processes.
The head is CPU-only (``GPU: 0``); one ``gpu_node`` type (``min_workers: 0``) is the only way to a
GPU. The fake provider expects the head on port 6379. Token authentication is on, with a token of
its own, so clients need ``RAY_AUTH_MODE=token`` and its ``RAY_AUTH_TOKEN_PATH`` (``client_env``).

The head runs in a session of its own and every node the autoscaler starts is its descendant in
the same process group: :meth:`FakeCluster.stop` signals that group only (not ``ray stop``, which
would kill every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PORT = 6379  # the fake provider joins workers to <node ip>:6379
HEAD_NODE_ID = "fffffffffffffffffffffffffffffffffffffffffffffffffff00000"  # fake_multi_node's head
_OTHER_PORTS = ("dashboard-port", "ray-client-server-port", "dashboard-agent-listen-port",
                "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port",
                "node-manager-port", "object-manager-port")  # fmt: skip


def autoscaling_config(*, head_cpus: int, gpu_nodes: int, gpu_node_cpus: int) -> dict:
    """A fake_multinode config: a CPU-only head and a GPU worker type that starts at zero."""
    return {
        "cluster_name": "slidefleet-fake",
        "max_workers": gpu_nodes,
        "idle_timeout_minutes": 1,
        "upscaling_speed": 10,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "available_node_types": {
            "ray.head.default": {
                "resources": {"CPU": head_cpus, "GPU": 0},
                "node_config": {},
                "max_workers": 0,
            },
            "gpu_node": {
                "resources": {"CPU": gpu_node_cpus, "GPU": 1},
                "node_config": {},
                "min_workers": 0,
                "max_workers": gpu_nodes,
            },
        },
        "head_node_type": "ray.head.default",
        "auth": {"ssh_user": "ubuntu"},
        **{
            k: []
            for k in (
                "initialization_commands",
                "setup_commands",
                "head_setup_commands",
                "worker_setup_commands",
                "head_start_ray_commands",
                "worker_start_ray_commands",
                "cluster_synced_files",
            )
        },
        "file_mounts": {},
        "file_mounts_sync_continuously": False,
    }


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def port_in_use(port: int = PORT) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class FakeCluster:
    temp_dir: Path
    token_path: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{PORT}"

    def client_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            k: v
            for k, v in (base or os.environ).items()
            if k not in {"RAY_ADDRESS", "RAY_AUTH_TOKEN"}
        }
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path))
        return env

    def log_tail(self, n_chars: int = 4000) -> str:
        return (
            self.log_path.read_text(errors="replace")[-n_chars:] if self.log_path.exists() else ""
        )

    def stop(self) -> None:
        """SIGTERM to ``ray start --block``, then SIGKILL to what is left of its process group."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@contextlib.contextmanager
def fake_cluster(
    *, head_cpus: int = 1, gpu_nodes: int = 2, gpu_node_cpus: int = 1, start_timeout_s: float = 120
) -> Iterator[FakeCluster]:
    """Start the fake autoscaling cluster; always tear it down, even on failure."""
    if port_in_use(PORT):
        raise RuntimeError(
            f"port {PORT} is in use: another Ray head runs here; the fake cluster needs it."
        )
    ray_cli = Path(sys.executable).with_name("ray")
    temp_dir = Path(tempfile.mkdtemp(prefix="sf-fake-"))  # short: Ray's socket paths are limited
    token_path = temp_dir / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    config = temp_dir / "autoscaling.yaml"
    config.write_text(
        json.dumps(
            autoscaling_config(
                head_cpus=head_cpus, gpu_nodes=gpu_nodes, gpu_node_cpus=gpu_node_cpus
            )
        )
    )  # JSON is YAML
    ports = dict(zip(_OTHER_PORTS, _free_ports(len(_OTHER_PORTS)), strict=True))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN"}
    }
    env.update(
        RAY_FAKE_CLUSTER="1",
        AUTOSCALER_UPDATE_INTERVAL_S="1",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_path),
        RAY_TMPDIR=str(temp_dir),
        RAY_USAGE_STATS_ENABLED="0",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    command = [
        str(ray_cli),
        "start",
        "--head",
        "--block",
        f"--port={PORT}",
        f"--num-cpus={head_cpus}",
        "--num-gpus=0",
        f"--autoscaling-config={config}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
        "--min-worker-port=0",
        "--max-worker-port=0",
        "--dashboard-host=127.0.0.1",
        *(f"--{flag}={port}" for flag, port in ports.items()),
    ]
    log_path = temp_dir / "ray-start.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=temp_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    cluster = FakeCluster(temp_dir, token_path, process, log_path)
    try:
        deadline = time.monotonic() + start_timeout_s
        while not _head_ready(cluster):
            if process.poll() is not None:
                raise RuntimeError(
                    f"`ray start --head` exited with {process.returncode}:\n{cluster.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"fake cluster head not up after {start_timeout_s:g} s:\n{cluster.log_tail()}"
                )
            time.sleep(1)
        yield cluster
    finally:
        cluster.stop()


def _head_ready(cluster: FakeCluster) -> bool:
    """The head answers and its autoscaler has reported once."""
    probe = (
        "import json, ray\n"
        f"ray.init(address={cluster.address!r}, logging_level='ERROR')\n"
        "from ray.experimental.internal_kv import _internal_kv_get\n"
        "s = _internal_kv_get('__autoscaling_status')\n"
        "raise SystemExit(0 if s and 'autoscaler_report' in json.loads(s) else 1)\n"
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", probe], env=cluster.client_env(), capture_output=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0
