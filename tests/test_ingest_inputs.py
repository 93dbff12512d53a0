"""Hostile input paths in ingest and in reprocess planning: refused at once, one failures row each."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from engine.ingest import ingest
from engine.operate import JobConfig, plan_reprocess
from engine.operate.pipeline import save_fleet_state
from engine.store import FleetLayout
from engine.tables import read_failures
from tests.conftest import write_plain_tiff_slide


def _tissue_slide(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    rgb = np.full((512, 640, 3), 240, np.uint8)
    rgb[100:400, 100:500] = (
        rng.integers(120, 200, size=(300, 400, 3)) * np.array([1, 0.5, 1])
    ).astype(np.uint8)
    return write_plain_tiff_slide(path, rgb, 0.5)


@pytest.fixture
def hostile_cohort(tmp_path: Path):
    """A manifest of one good slide and one row per kind of unusable path."""
    good = _tissue_slide(tmp_path / "good.tiff", 1)
    os.mkfifo(tmp_path / "pipe.tiff")
    (tmp_path / "folder.tiff").mkdir()
    (tmp_path / "loop.tiff").symlink_to(tmp_path / "loop.tiff")
    short = Path(tempfile.mkdtemp(prefix="sf", dir="/tmp"))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(short / "s.tiff"))
    annotation_pipe = tmp_path / "ann.xml"
    os.mkfifo(annotation_pipe)
    rows = {
        "good": good,
        "zero": Path("/dev/zero"),
        "pipe": tmp_path / "pipe.tiff",
        "folder": tmp_path / "folder.tiff",
        "loop": tmp_path / "loop.tiff",
        "sock": short / "s.tiff",
    }
    lines = ["slide_id,path,annotation"] + [f"{sid},{path}," for sid, path in rows.items()]
    lines.append(f"pipe_annotation,{_tissue_slide(tmp_path / 'b.tiff', 2)},{annotation_pipe}")
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(lines) + "\n")
    yield manifest
    server.close()
    (short / "s.tiff").unlink(missing_ok=True)
    short.rmdir()


EXPECTED = {
    "zero": "character device",
    "pipe": "named pipe",
    "folder": "a folder",
    "loop": "symlink loop",
    "sock": "a socket",
}


def test_ingest_refuses_each_hostile_path_with_one_row(
    hostile_cohort: Path, tmp_path: Path, ray_session
) -> None:
    root = tmp_path / "root"
    report = ingest(hostile_cohort, root, progress=False)
    assert sorted(r.slide_id for r in report.converted) == ["good", "pipe_annotation"]
    by_id = {f.slide_id: f for f in report.failures}
    assert set(by_id) == {*EXPECTED, "pipe_annotation"}
    for slide_id, words in EXPECTED.items():
        assert by_id[slide_id].error_type == "NotARegularFile", by_id[slide_id]
        assert words in by_id[slide_id].message
    # A FIFO annotation is a BadAnnotation row; the slide itself is converted, without the label.
    assert by_id["pipe_annotation"].error_type == "BadAnnotation"
    assert "named pipe" in by_id["pipe_annotation"].message
    table = read_failures(root / "tables", run_id=report.run_id)
    assert sorted(table["slide_id"].to_pylist()) == sorted(by_id)


def test_reprocess_dry_run_plans_around_hostile_paths(hostile_cohort: Path, tmp_path: Path) -> None:
    root = tmp_path / "fleet"
    job = JobConfig(manifest=str(hostile_cohort), root=str(root), models=[])
    save_fleet_state(FleetLayout(root), job)
    plan = plan_reprocess(root)
    assert set(plan.ingest) == {"good", "pipe_annotation"}
    assert set(plan.refused) == set(EXPECTED)
    for slide_id, words in EXPECTED.items():
        assert words in plan.refused[slide_id]
    # The CLI, as a user runs it: it finishes (a hang would hit the timeout) and exits 0.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "reprocess",
            "--root",
            str(root),
            "--dry-run",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert done.returncode == 0, done.stderr
    assert "refused (input not usable, fix the manifest): 5 slide(s)" in done.stdout
    assert "Traceback" not in done.stderr
