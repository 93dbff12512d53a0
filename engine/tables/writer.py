"""Write and read Parquet table parts, validating rows against the declared schema."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from engine import __version__
from engine.errors import SlideFleetError
from engine.tables.schemas import TABLE_SCHEMAS


class TableSchemaError(SlideFleetError, TypeError):
    """Rows do not match the table's declared Arrow schema (a bug, not bad input)."""


def _validate_keys(table_name: str, schema: pa.Schema, rows: Sequence[Mapping[str, Any]]) -> None:
    names = set(schema.names)
    required = {f.name for f in schema if not f.nullable}
    for index, row in enumerate(rows):
        unknown = set(row) - names
        missing = required - set(row)
        if unknown or missing:
            raise TableSchemaError(
                f"table {table_name!r} row {index}: unknown columns {sorted(unknown)}, "
                f"missing columns {sorted(missing)}"
            )


def write_table_part(
    tables_dir: Path,
    table_name: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    partition: Mapping[str, str] | None = None,
    run_id: str,
    schema: pa.Schema | None = None,
) -> Path | None:
    """Append one Parquet part to ``tables_dir/table_name`` (hive partitions), atomically.

    Provenance columns (run_id, engine_version, written_at) are filled in when absent.
    Returns the part's path, or ``None`` when there were no rows. ``schema`` replaces the
    declared one for tables whose columns depend on the model (``prob_<class>`` columns).
    """
    if not rows:
        return None
    schema = schema or TABLE_SCHEMAS[table_name]
    now = dt.datetime.now(dt.UTC)
    filled = [
        {"run_id": run_id, "engine_version": __version__, "written_at": now, **row} for row in rows
    ]
    _validate_keys(table_name, schema, filled)
    try:
        table = pa.Table.from_pylist(filled, schema=schema)
        table = table.cast(schema)  # enforces nullability too
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise TableSchemaError(f"table {table_name!r}: rows do not fit the schema: {exc}") from exc
    directory = Path(tables_dir) / table_name
    for key, value in (partition or {}).items():
        directory = directory / f"{key}={value}"
    directory.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    final_path = directory / f"part-{run_id}-{token}.parquet"
    tmp_path = directory / f".part-{run_id}-{token}.parquet.tmp"
    pq.write_table(table, tmp_path)
    tmp_path.replace(final_path)
    return final_path


def read_table(tables_dir: Path, table_name: str) -> pa.Table:
    """Read every committed part of a table (hidden temporaries are ignored)."""
    directory = Path(tables_dir) / table_name
    schema = TABLE_SCHEMAS[table_name]
    if not directory.exists():
        return schema.empty_table()
    dataset = ds.dataset(directory, format="parquet", partitioning="hive", exclude_invalid_files=True)
    return dataset.to_table()
