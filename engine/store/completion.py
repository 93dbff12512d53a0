"""Completion records: the last thing written to an output, the only proof that it is done."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.store.atomic import atomic_write_bytes

COMPLETION_FILE = "slidefleet-complete.json"


def write_completion(output_path: Path, record: dict[str, Any]) -> None:
    """Commit ``record`` as the completion record of the output at ``output_path``."""
    payload = json.dumps(record, indent=2, sort_keys=True).encode()
    atomic_write_bytes(Path(output_path) / COMPLETION_FILE, payload)


def read_completion(output_path: Path) -> dict[str, Any] | None:
    """The completion record of an output, or ``None`` when it is absent or unreadable."""
    record_path = Path(output_path) / COMPLETION_FILE
    try:
        record = json.loads(record_path.read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None
