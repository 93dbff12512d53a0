"""Content hashes of slide files, the key that decides whether ingest must redo a slide."""

from __future__ import annotations

import hashlib
from pathlib import Path

_BLOCK_BYTES = 4 * 1024 * 1024


def _companion_files(path: Path) -> list[Path]:
    """Files whose content is part of the slide besides ``path`` (MIRAX keeps data in a folder)."""
    if path.suffix.lower() == ".mrxs":
        data_dir = path.with_suffix("")
        if data_dir.is_dir():
            return sorted(p for p in data_dir.rglob("*") if p.is_file())
    return []


def slide_content_sha256(path: Path | str) -> str:
    """sha256 over the slide file and its companion files, streamed in 4 MiB blocks."""
    path = Path(path)
    digest = hashlib.sha256()
    for file_path in [path, *_companion_files(path)]:
        with file_path.open("rb") as handle:
            while block := handle.read(_BLOCK_BYTES):
                digest.update(block)
    return digest.hexdigest()
