"""Table writing of ``post``: one Parquet part per table, the completion record, then cleanup.

Tables ``slides``, ``regions``, ``thresholds``, ``cohort`` (one part each, partitioned by
``model_id``) and ``failures`` (stage ``post``). The completion record is written last; a newer
complete run then removes the parts of the one it supersedes, so the tables hold one run per
(model_id, params_hash). An up-to-date run's tables are read back from the parts its record
names.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from engine import __version__
from engine.post.aggregate import cohort_rows
from engine.post.planning import CohortPlan
from engine.post.record import RECORD_FORMAT
from engine.post.report import RESULT_TABLES, PostReport
from engine.post.slide_task import STAGE, SlideResult
from engine.store import FleetLayout
from engine.store.atomic import atomic_write_bytes
from engine.tables import FailureRecord, read_part, write_table_part
from engine.tables.schemas import TABLE_SCHEMAS


def _keyed(rows: Iterable[Mapping[str, Any]], keys: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{**keys, **row} for row in rows]


def _table_from_part(path: Path | None, name: str) -> pa.Table:
    if path is None:
        return TABLE_SCHEMAS[name].empty_table()
    return read_part(path, name)


def _read_back(
    layout: FleetLayout, record: dict[str, Any]
) -> tuple[dict[str, pa.Table], list[FailureRecord]]:
    tables: dict[str, pa.Table] = {}
    for name in (*RESULT_TABLES, "failures"):
        paths = [layout.tables_dir / p for p in record.get("parts", {}).get(name, [])]
        parts = [_table_from_part(p, name) for p in paths]
        tables[name] = pa.concat_tables(parts) if parts else TABLE_SCHEMAS[name].empty_table()
    failures = [
        FailureRecord(
            stage=r["stage"],
            slide_id=r["slide_id"],
            error_type=r["error_type"],
            message=r["message"],
            source_path=r["source_path"],
            model_id=r["model_id"],
        )
        for r in tables.pop("failures").to_pylist()
    ]
    return tables, failures


def _remove_parts(layout: FleetLayout, record: dict[str, Any] | None, keep: set[str]) -> None:
    if record is None:
        return
    for paths in record.get("parts", {}).values():
        for relative in paths:
            if relative not in keep:
                (layout.tables_dir / relative).unlink(missing_ok=True)


def write_outputs(
    layout: FleetLayout,
    report: PostReport,
    plan: CohortPlan,
    results: Sequence[SlideResult],
    threshold_rows: list[dict[str, Any]],
    previous: dict[str, Any] | None,
) -> None:
    """One Parquet part per table, then the completion record, then drop superseded parts."""
    model_id = report.model.model_id
    keys = {"model_id": model_id, "params_hash": report.params_hash}
    slide_rows = [r.row for r in results]
    rows = {
        "slides": _keyed(slide_rows, keys),
        "regions": _keyed((r for res in results for r in res.regions), keys),
        "thresholds": _keyed(threshold_rows, keys),
        "cohort": _keyed(cohort_rows(slide_rows, report.model.card.class_names), keys),
    }
    written: dict[str, Path | None] = {
        name: write_table_part(
            layout.tables_dir,
            name,
            rows[name],
            partition={"model_id": model_id},
            run_id=report.run_id,
        )
        for name in RESULT_TABLES
    }
    written["failures"] = write_table_part(
        layout.tables_dir,
        "failures",
        [f.__dict__ for f in report.failures],
        partition={"stage": STAGE},
        run_id=report.run_id,
    )
    report.tables = {name: _table_from_part(written[name], name) for name in RESULT_TABLES}
    parts = {
        name: [str(p.relative_to(layout.tables_dir))] if p else [] for name, p in written.items()
    }
    record = {
        "format": RECORD_FORMAT,
        "model_id": model_id,
        "model": report.model.ref,
        "params_hash": report.params_hash,
        "params": report.params.model_dump(mode="json", exclude={"execution"}),
        "run_id": report.run_id,
        "engine_version": __version__,
        "inputs": plan.inputs,
        "parts": parts,
        "threshold": report.threshold,
        "threshold_objective": report.threshold_objective,
        "fitted_thresholds": report.fitted_thresholds,
        "calibration_slide_ids": report.calibration_slide_ids,
        "threshold_source": report.threshold_source,
        "n_slides": len(slide_rows),
        "n_failures": len(report.failures),
    }
    assert report.record_path is not None
    atomic_write_bytes(report.record_path, json.dumps(record, indent=2, sort_keys=True).encode())
    _remove_parts(layout, previous, keep={p for paths in parts.values() for p in paths})


def reuse(layout: FleetLayout, report: PostReport, previous: dict[str, Any]) -> None:
    report.tables, report.failures = _read_back(layout, previous)
    report.run_id = previous["run_id"]
    report.reused = True
    report.threshold = previous.get("threshold")
    report.threshold_objective = previous.get("threshold_objective")
    report.fitted_thresholds = previous.get("fitted_thresholds", {})
    report.calibration_slide_ids = previous.get("calibration_slide_ids", [])
    report.threshold_source = previous.get("threshold_source")


__all__ = ["reuse", "write_outputs"]
