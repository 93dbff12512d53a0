"""The QC gate: which slides the latest QC of a fleet keeps out of inference, and why.

``tables/qc`` is appended by every QC run; a slide's newest row is its current verdict. Infer (in
``slidefleet run``) skips slides whose verdict is ``excluded``, and post leaves them out of the
cohort rather than reporting a missing prediction: the QC failures row already says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from engine.store import FleetLayout
from engine.tables.writer import read_table


def qc_verdicts(tables_dir: Path) -> dict[str, dict[str, object]]:
    """slide_id -> its newest ``tables/qc`` row (``{}`` when QC never ran)."""
    table = read_table(Path(tables_dir), "qc")
    newest: dict[str, dict[str, object]] = {}
    for row in table.to_pylist():
        current = newest.get(row["slide_id"])
        if current is None or row["written_at"] >= current["written_at"]:  # type: ignore[operator]
            newest[row["slide_id"]] = row
    return newest


def excluded_slides(tables_dir: Path) -> dict[str, list[str]]:
    """slide_id -> the reasons of the gating flags, for every slide the latest QC excluded."""
    return {
        slide_id: list(row.get("reasons") or [])  # type: ignore[call-overload]
        for slide_id, row in qc_verdicts(tables_dir).items()
        if row.get("excluded")
    }


def without_excluded(
    root: Path, slide_ids: Sequence[str] | None, excluded: set[str]
) -> list[str] | None:
    """``slide_ids`` (``None``: every slide store) less the QC-excluded ones."""
    if not excluded:
        return None if slide_ids is None else list(slide_ids)
    if slide_ids is None:
        slides_dir = FleetLayout(root).slides_dir
        slide_ids = (
            sorted(
                p.name.removesuffix(".ome.zarr")
                for p in slides_dir.glob("*.ome.zarr")
                if not p.name.startswith(".")
            )
            if slides_dir.is_dir()
            else []
        )
    return [s for s in slide_ids if s not in excluded]
