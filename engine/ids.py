"""Slide identifiers: the only user text that ever becomes part of a path."""

from __future__ import annotations

import re

from engine.errors import InvalidSlideId

# Letters, digits, '.', '_', '-'; must start with a letter or digit; no '..'; at most 128 chars.
# TCGA barcodes (TCGA-A2-A0YE-01Z-00-DX1) and CAMELYON names (tumor_001) fit.
_SLIDE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHOWN_CHARS = 80


def shorten(text: str, limit: int = _SHOWN_CHARS) -> str:
    """``text`` for a message: at most ``limit`` characters, saying how long the rest was."""
    if len(text) <= limit:
        return text
    return f"{text[: limit - 20]}…({len(text):,} characters)"


def check_slide_id(slide_id: str) -> str:
    """Return ``slide_id`` if it is safe to use as a file name, else raise :class:`InvalidSlideId`."""
    if not isinstance(slide_id, str) or not _SLIDE_ID.match(slide_id) or ".." in slide_id:
        shown = shorten(slide_id) if isinstance(slide_id, str) else slide_id
        raise InvalidSlideId(
            f"slide_id {shown!r} is not allowed: use 1–128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit and without '..' (it becomes a file name under the "
            "output root, so path separators are refused)."
        )
    return slide_id
