"""A full disk, for real: a tiny tmpfs mounted under the test folder and filled to the last byte.

Needs root (to mount); elsewhere these tests are skipped with the reason.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from engine.errors import OutputWriteError
from engine.store.atomic import atomic_directory, atomic_write_bytes, sweep_stale_files
from engine.tables.writer import write_table_part


def _mount_full(path: Path, size: str = "256k") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        message = f"cannot mount a tmpfs to simulate a full disk: {done.stderr.strip()}"
        if os.environ.get("SLIDEFLEET_TESTS_WITHOUT_MOUNT") == "1":
            pytest.skip(message + " (SLIDEFLEET_TESTS_WITHOUT_MOUNT=1)")
        pytest.fail(message + "; run as root, or set SLIDEFLEET_TESTS_WITHOUT_MOUNT=1 to skip")
    return path


def _write_until_full(handle) -> None:
    while True:
        handle.write(b"\0" * 4096)


def _fill(path: Path) -> None:
    with (
        (path / "filler").open("wb", buffering=0) as handle,
        pytest.raises(OSError, match="No space left"),
    ):
        _write_until_full(handle)


@pytest.fixture
def full_disk(tmp_path: Path):
    """A folder on a filesystem with no space left (files already in it stay readable)."""
    mount = _mount_full(tmp_path / "full")
    try:
        (mount / "old.json").write_bytes(b'{"old": true}')
        _fill(mount)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _build_store(final_path: Path, pixels: np.ndarray) -> None:
    with atomic_directory(final_path) as tmp:
        group = zarr.open_group(tmp, mode="w", zarr_format=3)
        array = group.create_array("0", shape=pixels.shape, chunks=(3, 256, 256), dtype="uint8")
        array[:] = pixels


def _hidden_temporaries(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(".*") if "tmp" in p.name]


def test_atomic_write_on_a_full_disk_keeps_the_old_file_and_no_temporary(full_disk: Path) -> None:
    with pytest.raises(OSError, match="No space left") as caught:
        atomic_write_bytes(full_disk / "old.json", b"x" * 100_000)
    assert caught.value.errno == errno.ENOSPC
    assert (full_disk / "old.json").read_bytes() == b'{"old": true}'
    assert _hidden_temporaries(full_disk) == []


def test_a_failed_store_build_is_not_recreated_by_chunk_writes_in_flight(tmp_path: Path) -> None:
    mount = _mount_full(tmp_path / "small", size="1m")
    try:
        pixels = np.random.default_rng(0).integers(0, 255, size=(3, 4096, 4096), dtype=np.uint8)
        with pytest.raises(OSError, match="No space left"):  # ~48 MB of noise on a 1 MB disk
            _build_store(mount / "s.ome.zarr", pixels)
        time.sleep(1.0)  # long enough for any write still in flight to land
        assert sorted(p.name for p in mount.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_table_part_that_cannot_be_written_is_a_typed_error_without_leftovers(
    full_disk: Path,
) -> None:
    rows = [
        {"stage": "ingest", "slide_id": f"s{i}", "error_type": "X", "message": "m" * 500}
        for i in range(2000)
    ]
    with pytest.raises(OutputWriteError, match="cannot write the 'failures' table"):
        write_table_part(full_disk, "failures", rows, partition={"stage": "ingest"}, run_id="r1")
    assert _hidden_temporaries(full_disk) == []


def test_stale_temporaries_are_swept_but_fresh_ones_are_left(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    old = tmp_path / "runs" / ".r1.json.tmp-abcdef123456"
    old_part = tmp_path / "tables" / "failures" / "stage=ingest" / ".part-r1-abc.parquet.tmp"
    old_part.parent.mkdir(parents=True)
    fresh = tmp_path / ".fleet.json.tmp-0123456789ab"
    kept = tmp_path / "runs" / "r1.json"
    for path in (old, old_part, fresh, kept):
        path.write_bytes(b"x")
    long_ago = time.time() - 7200
    for path in (old, old_part, kept):
        os.utime(path, (long_ago, long_ago))
    removed = sweep_stale_files([tmp_path])
    assert sorted(removed) == sorted([old, old_part])
    assert fresh.exists() and kept.exists()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, synth_cohort: Path, ray_session):
    """A scored fleet (the session's synthetic cohort, a real model) to break afterwards."""
    from engine.operate import score_cohort
    from tests.infer_models import Darkness, darkness_card, register

    root = tmp_path_factory.mktemp("diskfull") / "root"
    root.mkdir()
    register(root, Darkness(), darkness_card("darkness", "1"))
    score_cohort(synth_cohort, "darkness", root=root, progress=False)
    return synth_cohort, root


def test_views_and_runs_survive_a_full_failures_table(fleet, tmp_path: Path) -> None:
    from engine.cli import EXIT_OUTPUT_NOT_WRITTEN, main
    from engine.views import render_views

    manifest, root = fleet
    mount = _mount_full(root / "tables" / "failures")  # hides earlier rows until unmounted
    try:
        _fill(mount)
        viewed = render_views(root, "darkness", slide_ids=["synth_000", "no_such_slide"])
        assert [f.slide_id for f in viewed.failures] == ["no_such_slide"]
        assert viewed.write_errors and "failures" in viewed.write_errors[0]
        assert viewed.report is not None and viewed.report.exists()

        # A run whose stages cannot write their failure rows: exit 3, a run record saying why.
        broken = manifest.with_name("manifest-with-a-bad-row.csv")  # beside it: paths are relative
        header = manifest.read_text().splitlines()[0]
        broken.write_text(
            manifest.read_text() + "bad id!,nowhere.tif" + "," * (header.count(",") - 1) + "\n"
        )
        before = set((root / "runs").iterdir())
        code = main(["run", str(broken), "--model", "darkness", "--root", str(root), "--quiet"])
        assert code == EXIT_OUTPUT_NOT_WRITTEN
        (record_path,) = set((root / "runs").iterdir()) - before
        record = json.loads(record_path.read_text())
        assert record["stages"]["stopped"]["error_type"] == "OutputWriteError"
        assert "No space left on device" in record["stages"]["stopped"]["message"]
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        manifest.with_name("manifest-with-a-bad-row.csv").unlink(missing_ok=True)
