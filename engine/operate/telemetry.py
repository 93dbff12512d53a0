"""Run records: ``ROOT/runs/<run_id>.json`` with config, versions, stage timings and telemetry."""

from __future__ import annotations

import datetime as dt
import json
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from engine import __version__
from engine.store.atomic import atomic_write_bytes

_PACKAGES = (
    "ray",
    "torch",
    "zarr",
    "dask",
    "distributed",
    "numpy",
    "pyarrow",
    "openslide-python",
    "openslide-bin",
    "scikit-image",
    "numcodecs",
)


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"slidefleet": __version__, "python": platform.python_version()}
    for package in _PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    try:
        import openslide

        found["openslide-library"] = openslide.__library_version__
    except Exception:  # noqa: BLE001 - informative only
        found["openslide-library"] = None
    return found


def git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


@dataclass
class RunRecord:
    run_id: str
    config: dict[str, Any]
    started_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())
    finished_at: str | None = None
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    slides: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    not_retried: dict[str, dict[str, str]] = field(default_factory=dict)
    """stage -> slide_id -> error: slides whose last attempt failed on the same inputs."""

    def stage(self, name: str, **values: Any) -> None:
        self.stages.setdefault(name, {}).update(values)

    def slide(self, slide_id: str, stage: str, **values: Any) -> None:
        self.slides.setdefault(slide_id, {}).setdefault(stage, {}).update(values)

    def write(self, runs_dir: Path) -> Path:
        self.finished_at = dt.datetime.now(dt.UTC).isoformat()
        document = {
            "run_id": self.run_id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "argv": sys.argv,
            "host": socket.gethostname(),
            "git_commit": git_commit(),
            "versions": versions(),
            "config": self.config,
            "stages": self.stages,
            "slides": self.slides,
            "failures": self.failures,
            "not_retried": self.not_retried,
        }
        path = Path(runs_dir) / f"{self.run_id}.json"
        atomic_write_bytes(path, json.dumps(document, indent=2, default=str).encode())
        return path
