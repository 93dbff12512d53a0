"""The completion record of a ``post`` run: ``tables/_post/<model_id>/<params_hash>.json``.

It holds the key of every input (prediction and slide-store completion keys, split, label) and
the table parts written; it is written last, so a run without one did not complete. A run whose
record matches the current inputs is not recomputed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.post.params import PostParams
from engine.post.planning import plan_cohort, resolve_model
from engine.post.report import COHORT_SLIDE_ID
from engine.store import FleetLayout

RECORD_FORMAT = 2
"""2: cohort rows carry ``n_slides_without_truth``; a format-1 run is recomputed (and its parts
removed as superseded), never read back."""


def record_path(layout: FleetLayout, model_id: str, params_hash: str) -> Path:
    """Where the completion record of post for (model_id, params_hash) lives."""
    return layout.tables_dir / "_post" / model_id / f"{params_hash}.json"


def read_post_record(
    root: Path | str, model_id: str, params_hash: str, *, any_format: bool = False
) -> dict[str, Any] | None:
    """The completion record of the last complete post run, or ``None``.

    ``any_format``: a record of an older format too (to know which parts it supersedes).
    """
    path = record_path(FleetLayout(Path(root)), model_id, params_hash)
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    return record if any_format or record.get("format") == RECORD_FORMAT else None


def record_is_current(
    layout: FleetLayout, record: dict[str, Any] | None, inputs: dict[str, str]
) -> bool:
    if record is None or record.get("inputs") != inputs:
        return False
    parts = [p for paths in record.get("parts", {}).values() for p in paths]
    return all((layout.tables_dir / p).exists() for p in parts)


def stale_slides(root: Path | str, model: str, params: PostParams | None = None) -> dict[str, str]:
    """Slides whose inputs changed since the last complete post run: slide_id -> reason.

    ``{"*": ...}`` when there is no complete run for these parameters at all.
    """
    params = params or PostParams()
    layout = FleetLayout(Path(root))
    registered = resolve_model(layout, model)
    plan = plan_cohort(layout, registered, params)
    record = read_post_record(layout.root, registered.model_id, params.output_hash())
    if record is None:
        return {COHORT_SLIDE_ID: "no complete post run for this model and these parameters"}
    old: dict[str, str] = record.get("inputs", {})
    stale = {}
    for slide_id in sorted(set(old) | set(plan.inputs)):
        if slide_id not in old:
            stale[slide_id] = "new slide"
        elif slide_id not in plan.inputs:
            stale[slide_id] = "slide or prediction removed"
        elif old[slide_id] != plan.inputs[slide_id]:
            stale[slide_id] = "prediction, slide store, split or label changed"
    if not stale and not record_is_current(layout, record, plan.inputs):
        stale[COHORT_SLIDE_ID] = "table parts of the last run are missing"
    return stale


def post_is_current(root: Path | str, model: str, params: PostParams | None = None) -> bool:
    """True when re-running ``post`` with these parameters would only read its tables back."""
    return not stale_slides(root, model, params)


__all__ = [
    "RECORD_FORMAT",
    "post_is_current",
    "read_post_record",
    "record_is_current",
    "record_path",
    "stale_slides",
]
