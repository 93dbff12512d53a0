"""Atomic commit of a directory: write elsewhere, then rename into place.

A store is built in a hidden temporary sibling (``.<name>.tmp-<token>``). Only when every byte and
the completion record are written is it renamed to its final name, so a killed run can leave a
temporary behind but never a half-written store under a final name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

_TMP_MARK = ".tmp-"
_TRASH_MARK = ".trash-"


@contextlib.contextmanager
def atomic_directory(final_path: Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``final_path`` if the block succeeds."""
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    tmp_path = final_path.parent / f".{final_path.name}{_TMP_MARK}{token}"
    tmp_path.mkdir()
    try:
        yield tmp_path
    except BaseException:
        from engine.store.writer import settle_zarr_writes

        settle_zarr_writes()  # chunk writes still in flight would re-create tmp_path after rmtree
        shutil.rmtree(tmp_path, ignore_errors=True)
        raise
    trash_path = final_path.parent / f".{final_path.name}{_TRASH_MARK}{token}"
    if final_path.exists():
        os.replace(final_path, trash_path)
    os.replace(tmp_path, final_path)
    shutil.rmtree(trash_path, ignore_errors=True)


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete temporaries and trash left in ``directory`` by killed runs; return what was removed."""
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        if entry.name.startswith(".") and (_TMP_MARK in entry.name or _TRASH_MARK in entry.name):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write a file so that readers see either the old content or the new one, never a part.

    On any failure (a full disk, a kill signal raised as an exception) the temporary is removed
    and the old file, if any, is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.parent / f".{path.name}{_TMP_MARK}{uuid.uuid4().hex[:12]}"
    try:
        with tmp_path.open("wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _is_temporary(name: str) -> bool:
    """``.<name>.tmp-<token>`` (atomic writes, stores) or ``.part-….parquet.tmp`` (table parts)."""
    return name.startswith(".") and (_TMP_MARK in name or name.endswith(".tmp"))


def sweep_stale_files(directories: list[Path], *, older_than_s: float = 3600.0) -> list[Path]:
    """Delete hidden temporary files in ``directories`` (and below) left by killed or failed writes.

    Only files untouched for ``older_than_s`` are removed, so a write in progress in another
    process is never disturbed. Folders (stores being built) are left to
    :func:`remove_stale_temporaries`, which their own stage calls.
    """
    cutoff = time.time() - older_than_s
    removed: list[Path] = []
    for directory in directories:
        if not directory.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(directory):
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and not d.endswith(".zarr")]
            for name in filenames:
                candidate = Path(dirpath) / name
                if not _is_temporary(name):
                    continue
                try:
                    if candidate.lstat().st_mtime < cutoff:
                        candidate.unlink()
                        removed.append(candidate)
                except OSError:
                    continue
    return removed
