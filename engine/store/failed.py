"""Failure markers: the input key a slide last failed on, per stage, so it is not retried blindly.

``ROOT/failed/<stage>/[<model_id>/]<slide_id>.json`` holds the key of the inputs the stage failed
on (the same key a completed output would carry), the error and the run. A nightly run that finds
a marker with the current key knows the attempt would fail again and skips the slide (no new
failure row); a changed slide (new content hash), a changed parameter or ``retry_failed`` retries
it. A success removes the marker.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from engine.ids import check_slide_id
from engine.store.atomic import atomic_write_bytes

FAILED_DIR = "failed"


def failure_marker(root: Path, stage: str, slide_id: str, model_id: str | None = None) -> Path:
    """Where the failure marker of ``slide_id`` at ``stage`` (for ``model_id``) lives."""
    check_slide_id(slide_id)
    directory = Path(root) / FAILED_DIR / stage
    if model_id is not None:
        directory = directory / model_id
    return directory / f"{slide_id}.json"


def record_failure(
    marker: Path, key: dict[str, Any], *, error_type: str, message: str, run_id: str
) -> None:
    """Commit the marker: this stage failed on exactly these inputs."""
    document = {
        "input_key": key,
        "error_type": error_type,
        "message": message,
        "run_id": run_id,
        "failed_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    atomic_write_bytes(marker, json.dumps(document, indent=2, sort_keys=True, default=str).encode())


def read_failure(marker: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(Path(marker).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return document if isinstance(document, dict) else None


def failed_before(marker: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The marker when the last attempt failed on these very inputs, else ``None``."""
    document = read_failure(marker)
    if document is None or document.get("input_key") != json.loads(json.dumps(key, default=str)):
        return None
    return document


def clear_failure(marker: Path) -> None:
    Path(marker).unlink(missing_ok=True)
