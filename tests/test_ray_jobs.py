"""Ray Jobs end to end: `jobs/*.py` submitted to a real Ray head, outputs checked in the fleet root.

The head is a cluster of its own, as on a real deployment: `ray start --head` on loopback with its
own temp dir and ports, token authentication on (``RAY_AUTH_MODE=token``, the token in a file
named by ``RAY_AUTH_TOKEN_PATH``), and the repository uploaded as the job's ``working_dir``.

It is started as a child of this test (``--block``) and stopped by signalling that child and its
process group. Not ``ray stop``: that kills every Ray process on the machine, the session's
in-process Ray (``ray_session``) and other users' clusters included. This process never calls
``ray.init``; it only talks HTTP to the head's Jobs API.
"""

from __future__ import annotations

import contextlib
import csv
import os
import secrets
import shlex
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

import pytest

REPO = Path(__file__).resolve().parents[1]
RAY_CLI = Path(sys.executable).with_name("ray")
# Uploads are capped at 512 MiB (the gRPC message size); .venv alone is 2.6 GB. Ray 2.60 also
# skips .git and .venv by default and honours .gitignore; the list keeps older Rays safe.
WORKING_DIR_EXCLUDES = [
    ".venv", ".git", "**/__pycache__", "*.egg-info", ".pytest_cache", ".mypy_cache",
    ".ruff_cache", ".hypothesis", "build", "demo",
]  # fmt: skip
# Every port the head opens, chosen free here, so it never meets another Ray on this machine.
PORT_FLAGS = (
    "port", "dashboard-port", "ray-client-server-port", "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port",
    "node-manager-port", "object-manager-port",
)  # fmt: skip
HEAD_START_TIMEOUT_S = 90
JOB_TIMEOUT_S = 180


@dataclass(frozen=True)
class RayHead:
    """A running local Ray head reached through its Jobs API."""

    dashboard_url: str
    token: str
    log_path: Path

    def client(self, *, with_token: bool = True):
        from ray.job_submission import JobSubmissionClient

        headers = {"Authorization": f"Bearer {self.token}"} if with_token else None
        return JobSubmissionClient(self.dashboard_url, headers=headers)

    def log_tail(self, n_chars: int = 4000) -> str:
        return (
            self.log_path.read_text(errors="replace")[-n_chars:] if self.log_path.exists() else ""
        )


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _head_env(temp_dir: Path, token_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN"}
    }
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_path),
        RAY_TMPDIR=str(temp_dir),
        # A job's entrypoint runs `python` from the head's PATH: this venv's, as if activated.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def _stop_head(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to `ray start --block` shuts its node down; then clear its process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
    # The group is this head's alone (start_new_session): whatever is left of it is ours.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayHead]:
    # A short temp dir: Ray's Unix sockets live under it and socket paths are limited to 107 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="sf-rayjob-"))
    token = secrets.token_hex(32)
    token_path = temp_dir / "auth_token"
    token_path.write_text(token)
    token_path.chmod(0o600)
    ports = dict(zip(PORT_FLAGS, _free_ports(len(PORT_FLAGS)), strict=True))
    command = [
        str(RAY_CLI), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", "--num-cpus=2", "--num-gpus=0",
        f"--temp-dir={temp_dir}", "--disable-usage-stats",
        "--min-worker-port=0", "--max-worker-port=0",  # random worker ports: no clash with other Rays
        *(f"--{flag}={port}" for flag, port in ports.items()),
    ]  # fmt: skip
    log_path = temp_dir / "ray-start.log"
    head = RayHead(f"http://127.0.0.1:{ports['dashboard-port']}", token, log_path)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=temp_dir,
            env=_head_env(temp_dir, token_path),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + HEAD_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"`ray start --head` exited with {proc.returncode}:\n{head.log_tail()}")
            try:
                head.client().list_jobs()
                break
            except (ConnectionError, RuntimeError) as exc:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"Ray head not up after {HEAD_START_TIMEOUT_S}s ({exc}):\n{head.log_tail()}"
                    )
                time.sleep(1)
        yield head
    finally:
        _stop_head(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _run_job(head: RayHead, entrypoint: list[str]) -> tuple[str, str]:
    """Submit ``entrypoint`` with the repository as working_dir; wait; return (status, logs)."""
    from ray.job_submission import JobStatus

    client = head.client()
    job_id = client.submit_job(
        entrypoint=shlex.join(entrypoint),
        runtime_env={"working_dir": str(REPO), "excludes": WORKING_DIR_EXCLUDES},
    )
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while (status := client.get_job_status(job_id)) not in {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.STOPPED,
    }:
        if time.monotonic() > deadline:
            client.stop_job(job_id)
            pytest.fail(
                f"job {job_id} still {status} after {JOB_TIMEOUT_S}s:\n"
                f"{client.get_job_logs(job_id)[-4000:]}"
            )
        time.sleep(1)
    return str(status.value), client.get_job_logs(job_id)


@pytest.fixture(scope="module")
def cohort_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two synthetic slides, plus a row whose file does not exist (a per-slide failure)."""
    from engine.synth import generate_cohort

    manifest = generate_cohort(
        tmp_path_factory.mktemp("jobs-cohort"), 2, seed=11, width_px=2048, height_px=2048
    )
    with manifest.open(newline="") as f:
        columns = next(csv.reader(f))
    with manifest.open("a", newline="") as f:
        csv.DictWriter(f, columns).writerow({"slide_id": "broken", "path": "slides/missing.tif"})
    return manifest


def test_jobs_api_rejects_a_client_without_the_token(ray_head: RayHead) -> None:
    from ray.exceptions import AuthenticationError

    with pytest.raises(AuthenticationError):
        ray_head.client(with_token=False).list_jobs()


def test_ingest_job_writes_stores_and_tables(
    ray_head: RayHead, cohort_manifest: Path, tmp_path: Path
) -> None:
    from engine.tables import read_failures, read_table

    root = tmp_path / "fleet"
    status, logs = _run_job(
        ray_head, ["python", "jobs/ingest.py", str(cohort_manifest), "--root", str(root)]
    )

    # A slide that fails is a row of tables/failures, not a failed job.
    assert status == "SUCCEEDED", logs[-4000:]
    assert "2 converted, 0 up to date, 1 failed" in logs
    ingested = read_table(root / "tables", "ingested")
    assert sorted(ingested.column("slide_id").to_pylist()) == ["synth_000", "synth_001"]
    for slide_id in ("synth_000", "synth_001"):
        assert (root / "slides" / f"{slide_id}.ome.zarr" / "zarr.json").is_file()
    assert read_failures(root / "tables").column("slide_id").to_pylist() == ["broken"]


@pytest.mark.slow  # two jobs, four stages: 50-90 s on 2 busy cores
def test_main_job_scores_the_cohort_and_reprocess_finds_nothing_stale(
    ray_head: RayHead, cohort_manifest: Path, tmp_path: Path
) -> None:
    """The main job (ingest → infer on CPU actors: the head has no GPU → post), then the
    scheduled one (reprocess --dry-run) on the same root."""
    from engine.tables import read_table
    from tests.infer_models import Darkness, darkness_card, register

    root = tmp_path / "fleet"
    model = register(root, Darkness(), darkness_card("darkness"))
    # Both synthetic slides are in the train split: no calibration slide to fit a threshold on.
    config = tmp_path / "job.yaml"
    config.write_text("views: false\npost:\n  fallback_threshold: 0.5\n")
    entrypoint = ["python", "jobs/score_cohort.py", str(cohort_manifest), "--model", "darkness"]
    status, logs = _run_job(ray_head, [*entrypoint, "--root", str(root), "--config", str(config)])

    # The broken slide is a row of tables/failures, not a failed job.
    assert status == "SUCCEEDED", logs[-4000:]
    assert f"model_id {model.model_id}" in logs
    slides = read_table(root / "tables", "slides").to_pylist()
    scored = sorted(r["slide_id"] for r in slides if r["model_id"] == model.model_id)
    assert scored == ["synth_000", "synth_001"], logs[-4000:]
    assert list((root / "runs").glob("*.json")), "no run record"

    # The scheduled job on the same root: every output's key matches, so nothing is stale.
    status, logs = _run_job(
        ray_head, ["python", "jobs/reprocess.py", "--root", str(root), "--dry-run"]
    )
    assert status == "SUCCEEDED", logs[-4000:]
    assert "ingest: nothing stale (2 slide stores up to date)" in logs
    assert f"infer darkness (model_id {model.model_id}): nothing stale" in logs


def test_job_exits_2_on_a_bad_config_before_touching_ray(tmp_path: Path) -> None:
    """Fatal errors end the job with exit code 2 and a one-line reason (no Ray needed)."""
    config = tmp_path / "job.yaml"
    config.write_text("ingest:\n  chunk_px: 3\n")
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "jobs" / "ingest.py"),
            str(tmp_path / "manifest.csv"),
            "--root",
            str(tmp_path / "fleet"),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    assert result.returncode == 2, result.stderr
    assert "ConfigError" in result.stderr
    assert "ingest.chunk_px" in result.stderr
    assert not (tmp_path / "fleet").exists()


@pytest.mark.parametrize("job", ["ingest", "score_cohort", "reprocess"])
def test_entrypoints_parse_their_arguments(job: str) -> None:
    """The scripts import and parse before the engine is imported (it is imported in the job)."""
    result = subprocess.run(
        [sys.executable, str(REPO / "jobs" / f"{job}.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "--root" in result.stdout
