"""Run identifiers."""

from __future__ import annotations

import datetime as dt
import uuid


def new_run_id() -> str:
    """Sortable, unique: UTC timestamp plus a short random suffix."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
