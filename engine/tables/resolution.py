"""Which failures are still open: the ``failures_view`` (schema ``schemas/arrow/failures_view.json``).

The failures table is an append-only log: a slide that failed on Monday and was fixed on Tuesday
keeps Monday's row. The view keeps the newest row per (stage, slide_id, model_id) and marks it
``resolved`` when a later run wrote that stage's output for the slide (a row of ``ingested`` for
manifest/ingest failures, ``inferred`` for infer, ``slides`` for post, ``qc`` for qc, the panel
image for views). Nothing is deleted: the log stays the audit trail.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa

from engine.store import FleetLayout
from engine.tables.schemas import FAILURES_VIEW_SCHEMA
from engine.tables.writer import read_table

# Stage of a failure -> the table whose later row for the same slide means the failure is fixed.
_OUTPUT_TABLE = {
    "manifest": "ingested",
    "ingest": "ingested",
    "infer": "inferred",
    "post": "slides",
    "qc": "qc",
}

Key = tuple[str, str | None]  # (slide_id, model_id or None)


def _latest_outputs(tables_dir: Path, table_name: str) -> dict[Key, dt.datetime]:
    table = read_table(tables_dir, table_name)
    latest: dict[Key, dt.datetime] = {}
    if not table.num_rows:
        return latest
    model_ids = (
        table["model_id"].to_pylist()
        if "model_id" in table.column_names
        else [None] * table.num_rows
    )
    for slide_id, model_id, written_at in zip(
        table["slide_id"].to_pylist(), model_ids, table["written_at"].to_pylist(), strict=True
    ):
        for key in ((slide_id, model_id), (slide_id, None)):
            if key not in latest or written_at > latest[key]:
                latest[key] = written_at
    return latest


def _views_output(layout: FleetLayout, row: dict[str, Any]) -> dt.datetime | None:
    if row.get("model_id") is None:
        return None
    panel = layout.views_dir / row["model_id"] / f"{row['slide_id']}_panel.png"
    try:
        return dt.datetime.fromtimestamp(panel.stat().st_mtime, dt.UTC)
    except OSError:
        return None


def failures_view(root: Path | str, *, open_only: bool = False) -> pa.Table:
    """The newest failure per (stage, slide_id, model_id), with ``attempts``, ``resolved`` and ``resolved_at``.

    ``open_only`` keeps the failures nobody has fixed yet: what a lab manager has to act on.
    """
    layout = FleetLayout(Path(root))
    rows = read_table(layout.tables_dir, "failures").to_pylist()
    attempts = Counter((r["stage"], r["slide_id"], r.get("model_id")) for r in rows)
    newest: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    for row in rows:
        key = (row["stage"], row["slide_id"], row.get("model_id"))
        if key not in newest or row["written_at"] >= newest[key]["written_at"]:
            newest[key] = row
    outputs = {
        name: _latest_outputs(layout.tables_dir, name) for name in set(_OUTPUT_TABLE.values())
    }
    out: list[dict[str, Any]] = []
    for key, row in sorted(
        newest.items(), key=lambda item: (item[0][0], item[0][1], item[0][2] or "")
    ):
        stage, slide_id, model_id = key
        if stage == "views":
            produced = _views_output(layout, row)
        elif stage in _OUTPUT_TABLE:
            produced = outputs[_OUTPUT_TABLE[stage]].get((slide_id, model_id))
        else:
            produced = None
        resolved = produced is not None and produced > row["written_at"]
        if open_only and resolved:
            continue
        out.append(
            {
                **{name: row.get(name) for name in FAILURES_VIEW_SCHEMA.names if name in row},
                "attempts": attempts[key],
                "resolved": resolved,
                "resolved_at": produced if resolved else None,
            }
        )
    return pa.Table.from_pylist(out, schema=FAILURES_VIEW_SCHEMA)
