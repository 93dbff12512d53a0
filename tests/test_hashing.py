"""Input checks before hashing, the size limit and the (path, size, mtime_ns, inode) hash cache."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
from pathlib import Path

import pytest

from engine.errors import InputTooLarge, NotARegularFile, SlideNotFound
from engine.slides.hashing import MAX_INPUT_BYTES, HashCache, check_input_file, slide_content_sha256


@pytest.fixture
def hostile(tmp_path: Path):
    """Every kind of path that is not a slide file, made for real."""
    fifo = tmp_path / "pipe.svs"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.svs"
    folder.mkdir()
    loop = tmp_path / "loop.svs"
    loop.symlink_to(loop)
    dangling = tmp_path / "dangling.svs"
    dangling.symlink_to(tmp_path / "gone.svs")
    short = Path(tempfile.mkdtemp(prefix="sf", dir="/tmp"))  # AF_UNIX paths must be short
    sock_path = short / "s.svs"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    yield {
        "fifo": fifo,
        "folder": folder,
        "loop": loop,
        "dangling": dangling,
        "socket": sock_path,
        "zero": Path("/dev/zero"),
    }
    server.close()
    sock_path.unlink(missing_ok=True)
    short.rmdir()


@pytest.mark.parametrize(
    ("kind", "error", "words"),
    [
        ("fifo", NotARegularFile, "named pipe"),
        ("folder", NotARegularFile, "a folder"),
        ("loop", NotARegularFile, "symlink loop"),
        ("socket", NotARegularFile, "a socket"),
        ("zero", NotARegularFile, "character device"),
        ("dangling", SlideNotFound, "does not exist"),
    ],
)
def test_non_regular_paths_are_refused_before_any_read(hostile, kind, error, words) -> None:
    with pytest.raises(error, match=words):
        check_input_file(hostile[kind])
    with pytest.raises(error, match=words):  # and hashing refuses it the same way, at once
        slide_content_sha256(hostile[kind])


def test_a_file_larger_than_any_slide_is_refused_unread(tmp_path: Path) -> None:
    huge = tmp_path / "huge.svs"
    with huge.open("wb") as handle:
        handle.truncate(MAX_INPUT_BYTES + 1)  # sparse: no disk used, but stat says 256 GiB + 1
    with pytest.raises(InputTooLarge, match="larger than any slide"):
        slide_content_sha256(huge)
    small = tmp_path / "small.svs"
    small.write_bytes(b"x" * 100)
    with pytest.raises(InputTooLarge):
        check_input_file(small, max_bytes=99)


def test_hash_cache_is_keyed_by_size_mtime_and_inode(tmp_path: Path) -> None:
    slide = tmp_path / "a.svs"
    slide.write_bytes(b"first content")
    cache = HashCache(tmp_path / "cache" / "hashes.json")
    first = slide_content_sha256(slide, cache=cache)
    assert first == hashlib.sha256(b"first content").hexdigest()
    stored = json.loads(cache.path.read_text())
    info = slide.stat()
    assert stored[str(slide)]["stamps"] == [
        [str(slide), info.st_size, info.st_mtime_ns, info.st_ino]
    ]

    # Same size, same mtime, same inode: the cache answers without reading (so it returns the
    # old hash even though the bytes changed; that is the documented contract of the cache).
    with slide.open("r+b") as handle:
        handle.write(b"FIRST")
    os.utime(slide, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert slide_content_sha256(slide, cache=HashCache(cache.path)) == first
    # Any change of the stamp recomputes: mtime ...
    os.utime(slide, ns=(info.st_atime_ns, info.st_mtime_ns + 1))
    assert (
        slide_content_sha256(slide, cache=HashCache(cache.path))
        == hashlib.sha256(b"FIRST content").hexdigest()
    )
    # ... or a new file under the same name (new inode), even with the same size and mtime.
    replacement = tmp_path / "b.svs"
    replacement.write_bytes(b"other content")
    os.utime(replacement, ns=(info.st_atime_ns, info.st_mtime_ns + 1))
    replacement.replace(slide)
    assert (
        slide_content_sha256(slide, cache=HashCache(cache.path))
        == hashlib.sha256(b"other content").hexdigest()
    )
    assert not [p for p in cache.path.parent.iterdir() if ".tmp-" in p.name]


def test_a_corrupt_cache_only_costs_a_rehash(tmp_path: Path) -> None:
    slide = tmp_path / "a.svs"
    slide.write_bytes(b"content")
    cache_path = tmp_path / "hashes.json"
    cache_path.write_bytes(b"{not json")
    assert (
        slide_content_sha256(slide, cache=HashCache(cache_path))
        == hashlib.sha256(b"content").hexdigest()
    )
    assert str(slide) in json.loads(cache_path.read_text())


def test_mirax_companion_files_are_part_of_the_hash_and_its_stamps(tmp_path: Path) -> None:
    slide = tmp_path / "s.mrxs"
    slide.write_bytes(b"index")
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "Data0000.dat").write_bytes(b"tiles")
    cache = HashCache(tmp_path / "hashes.json")
    first = slide_content_sha256(slide, cache=cache)
    assert first == hashlib.sha256(b"indextiles").hexdigest()
    (tmp_path / "s" / "Data0000.dat").write_bytes(b"TILES!")
    assert (
        slide_content_sha256(slide, cache=HashCache(cache.path))
        == hashlib.sha256(b"indexTILES!").hexdigest()
    )
