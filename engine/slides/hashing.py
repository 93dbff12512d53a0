"""Content hashes of slide files, the key that decides whether ingest must redo a slide.

Nothing is read before it is known to be a regular file of sane size: a manifest row pointing
at ``/dev/zero``, a FIFO, a folder or a socket is refused at once (:class:`NotARegularFile`)
instead of hanging the run. Hashes are cached by (path, size, mtime_ns, inode) of every file
that makes up the slide, so an unchanged slide is never read twice (:class:`HashCache`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from engine.errors import InputTooLarge, NotARegularFile, SlideNotFound, SlideUnreadable

_BLOCK_BYTES = 4 * 1024 * 1024
# The largest whole-slide images (e.g. 40x brightfield of a full resection) are tens of GB;
# anything beyond this is not a slide and would only tie a worker up for hours.
MAX_INPUT_BYTES = 256 * 1024**3

Stamp = tuple[str, int, int, int]  # (path, size, mtime_ns, inode)

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def check_input_file(
    path: Path | str,
    *,
    what: Literal["slide", "annotation"] = "slide",
    max_bytes: int = MAX_INPUT_BYTES,
) -> os.stat_result:
    """``stat`` of ``path`` if it is a regular file (after symlinks) of at most ``max_bytes``.

    Raises :class:`SlideNotFound`, :class:`NotARegularFile` (folder, device, FIFO, socket, symlink
    loop), :class:`InputTooLarge` or :class:`SlideUnreadable` (e.g. permission denied); never opens
    the file, so it returns at once whatever ``path`` is.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        if path.is_symlink():
            raise SlideNotFound(
                f"{path}: the {what} file is a symlink to {os.readlink(path)!r}, which does not exist."
            ) from exc
        raise SlideNotFound(f"{path}: {what} file not found.") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotARegularFile(
                f"{path}: the {what} path is a symlink loop (it points back to itself); fix the link."
            ) from exc
        raise SlideUnreadable(
            f"{path}: cannot read the {what} file: {exc.strerror or exc}."
        ) from exc
    if not stat.S_ISREG(info.st_mode):
        raise NotARegularFile(
            f"{path}: the {what} path is {_kind(info.st_mode)}, not a {what} file; "
            "fix the manifest's path."
        )
    if info.st_size > max_bytes:
        raise InputTooLarge(
            f"{path}: {info.st_size:,} bytes is larger than any {what} file "
            f"(limit {max_bytes:,}); is this the right file?"
        )
    return info


def _companion_files(path: Path) -> list[Path]:
    """Files whose content is part of the slide besides ``path`` (MIRAX keeps data in a folder)."""
    if path.suffix.lower() == ".mrxs":
        data_dir = path.with_suffix("")
        if data_dir.is_dir():
            return sorted(p for p in data_dir.rglob("*") if p.is_file())
    return []


def _stamp(path: Path, info: os.stat_result) -> Stamp:
    return (str(path), info.st_size, info.st_mtime_ns, info.st_ino)


def content_stamps(
    path: Path | str, *, what: Literal["slide", "annotation"] = "slide"
) -> list[Stamp]:
    """What the hash depends on: (path, size, mtime_ns, inode) of the file and its companions.

    Checks every file first (:func:`check_input_file`), so this never blocks.
    """
    path = Path(path)
    stamps = [_stamp(path, check_input_file(path, what=what))]
    for companion in _companion_files(path):
        stamps.append(_stamp(companion, check_input_file(companion, what=what)))
    total = sum(s[1] for s in stamps)
    if total > MAX_INPUT_BYTES:
        raise InputTooLarge(
            f"{path}: {total:,} bytes with its data folder is larger than any {what} (limit {MAX_INPUT_BYTES:,})."
        )
    return stamps


def _hash_file(path: Path, digest: hashlib._Hash, limit: int) -> int:
    # O_NONBLOCK: if the path was swapped for a FIFO since the check, opening does not block;
    # fstat on the open descriptor then refuses it.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotARegularFile(
                f"{path}: changed into {_kind(os.fstat(fd).st_mode)} while being read."
            )
        read = 0
        while block := handle.read(_BLOCK_BYTES):
            read += len(block)
            if read > limit:
                raise InputTooLarge(f"{path}: grew past {limit:,} bytes while being hashed.")
            digest.update(block)
    return read


def slide_content_sha256(
    path: Path | str,
    *,
    cache: HashCache | None = None,
    what: Literal["slide", "annotation"] = "slide",
) -> str:
    """sha256 over the slide file and its companion files, streamed in 4 MiB blocks.

    Refuses non-regular and oversized files before reading a byte; with ``cache``, returns the
    cached hash when no file's (path, size, mtime_ns, inode) changed.
    """
    path = Path(path)
    stamps = content_stamps(path, what=what)
    if cache is not None and (cached := cache.get(stamps)) is not None:
        return cached
    digest = hashlib.sha256()
    budget = MAX_INPUT_BYTES
    for file_path, *_ in stamps:
        try:
            budget -= _hash_file(Path(file_path), digest, budget)
        except FileNotFoundError as exc:
            raise SlideNotFound(
                f"{file_path}: {what} file disappeared while being hashed."
            ) from exc
        except IsADirectoryError as exc:
            raise NotARegularFile(
                f"{file_path}: the {what} path became a folder while being hashed."
            ) from exc
        except (NotARegularFile, InputTooLarge):
            raise
        except OSError as exc:
            raise SlideUnreadable(
                f"{file_path}: cannot read the {what} file: {exc.strerror or exc}."
            ) from exc
    sha256 = digest.hexdigest()
    if cache is not None and content_stamps(path, what=what) == stamps:  # unchanged while hashed
        cache.put(stamps, sha256)
    return sha256


class HashCache:
    """Content hashes keyed by the stamps of the files hashed, in one JSON file under the fleet root.

    Shared by concurrent Ray workers: each update is a locked read-merge-write, written atomically,
    so a killed worker leaves the old file or the new one. A corrupt or unreadable cache is ignored
    (the hash is recomputed): the cache can only save time, never change a result.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._entries: dict[str, dict[str, object]] | None = None

    def _load(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, stamps: list[Stamp]) -> str | None:
        if self._entries is None:
            self._entries = self._load()
        entry = self._entries.get(stamps[0][0])
        if isinstance(entry, dict) and entry.get("stamps") == [list(s) for s in stamps]:
            sha256 = entry.get("sha256")
            return sha256 if isinstance(sha256, str) else None
        return None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def put(self, stamps: list[Stamp], sha256: str) -> None:
        """Record a hash; a cache that cannot be written (disk full) only costs a re-hash later."""
        # Imported here: engine.store imports zarr, which readers of this module need not load.
        from engine.store.atomic import atomic_write_bytes

        try:
            with self._locked():
                entries = self._load()
                entries[stamps[0][0]] = {"stamps": [list(s) for s in stamps], "sha256": sha256}
                atomic_write_bytes(self.path, json.dumps(entries, sort_keys=True).encode())
                self._entries = entries
        except OSError:
            return
