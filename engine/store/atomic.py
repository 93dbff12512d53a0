"""Atomic commit of a directory: write elsewhere, then rename into place.

A store is built in a hidden temporary sibling (``.<name>.tmp-<token>``). Only when every byte and
the completion record are written is it renamed to its final name, so a killed run can leave a
temporary behind but never a half-written store under a final name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
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
    """Write a file so that readers see either the old content or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.parent / f".{path.name}{_TMP_MARK}{uuid.uuid4().hex[:12]}"
    with tmp_path.open("wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp_path, path)
