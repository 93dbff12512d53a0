"""Bookkeeping tables that hold current rows: replace a slide's row, merge a run's small parts.

``ingested`` keeps one row per slide (the store that exists now); ``inferred`` gets a row the
moment a prediction commits (so a killed run's commits are recorded) and a run's one-row parts
are merged into one part when the run ends. Parts are replaced by writing the new part first and
deleting the old ones after, so a reader never sees a table without the rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from engine.tables.schemas import TABLE_SCHEMAS
from engine.tables.writer import read_part, write_table_part


def _partition_dir(tables_dir: Path, table_name: str, partition: Mapping[str, str] | None) -> Path:
    directory = Path(tables_dir) / table_name
    for key, value in (partition or {}).items():
        directory = directory / f"{key}={value}"
    return directory


def _parts(directory: Path, pattern: str = "part-*.parquet") -> list[Path]:
    return sorted(p for p in directory.glob(pattern) if p.is_file()) if directory.is_dir() else []


def _read_parts(parts: Sequence[Path], table_name: str) -> pa.Table:
    tables = [read_part(p, table_name) for p in parts]
    return pa.concat_tables(tables) if tables else TABLE_SCHEMAS[table_name].empty_table()


def replace_current_rows(
    tables_dir: Path,
    table_name: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    key: str,
    run_id: str,
    partition: Mapping[str, str] | None = None,
) -> Path | None:
    """Make ``rows`` the current rows of their ``key`` values; rows of other keys are kept.

    The partition's parts are merged into one new part (the old rows whose key is not in
    ``rows``, then ``rows``), and the old parts are deleted. Nothing happens without rows.
    """
    if not rows:
        return None
    directory = _partition_dir(tables_dir, table_name, partition)
    old_parts = _parts(directory)
    old = _read_parts(old_parts, table_name)
    replaced = pa.array(sorted({str(r[key]) for r in rows}), pa.string())
    if old.num_rows:
        old = old.filter(pc.invert(pc.is_in(old[key], replaced)))
    kept = old.to_pylist()
    path = write_table_part(
        tables_dir, table_name, [*kept, *rows], partition=partition, run_id=run_id
    )
    for part in old_parts:
        if part != path:
            part.unlink(missing_ok=True)
    return path


def merge_run_parts(
    tables_dir: Path, table_name: str, *, run_id: str, partition: Mapping[str, str] | None = None
) -> Path | None:
    """Merge the parts one run appended to a partition into a single part."""
    directory = _partition_dir(tables_dir, table_name, partition)
    parts = _parts(directory, f"part-{run_id}-*.parquet")
    if len(parts) < 2:
        return parts[0] if parts else None
    rows = _read_parts(parts, table_name).to_pylist()
    path = write_table_part(tables_dir, table_name, rows, partition=partition, run_id=run_id)
    for part in parts:
        if part != path:
            part.unlink(missing_ok=True)
    return path
