"""Write and read Parquet table parts, validating rows against the declared schema.

A table is a hive-partitioned directory, ``<table>/<key>=<value>/part-<run>-<token>.parquet``
(keys in :data:`~engine.tables.schemas.TABLE_PARTITIONS`). The partition key is written in the
directory name only, never inside the files, so ``pd.read_parquet("tables/slides")`` with
pandas' defaults (and polars / DuckDB with hive partitioning) reads each column exactly once.
:func:`read_table` and :func:`read_part` give the table's full declared schema back, partition
keys included (as strings, whatever they look like), plus the per-model ``prob_<class>`` columns
of tables/tiles and tables/slide_predictions (null in rows of a model without that class).
"""

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
from engine.errors import OutputWriteError, SlideFleetError
from engine.tables.schemas import TABLE_PARTITIONS, TABLE_SCHEMAS
from engine.tables.slide_level_schemas import MODEL_COLUMN_PREFIXES


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

    ``partition`` gives the value of each of the table's partition keys (all of them); rows may
    carry the key too (it must then equal the partition's value) but it is written only in the
    directory name. Provenance columns (run_id, engine_version, written_at) are filled in when
    absent. Returns the part's path, or ``None`` when there were no rows. ``schema`` replaces the
    declared one for tables whose columns depend on the model (``prob_<class>`` columns).
    """
    if not rows:
        return None
    schema = schema or TABLE_SCHEMAS[table_name]
    partition = _check_partition(table_name, partition or {})
    now = dt.datetime.now(dt.UTC)
    filled = [
        {"run_id": run_id, "engine_version": __version__, "written_at": now, **row, **partition}
        for row in rows
    ]
    for index, row in enumerate(rows):
        clash = {k: row[k] for k in partition if k in row and row[k] != partition[k]}
        if clash:
            raise TableSchemaError(
                f"table {table_name!r} row {index}: {clash} disagrees with its partition {partition}"
            )
    _validate_keys(table_name, schema, filled)
    stored = schema
    for key in TABLE_PARTITIONS.get(table_name, ()):
        stored = stored.remove(stored.get_field_index(key))
    try:
        table = pa.Table.from_pylist(filled, schema=schema)
        table = table.cast(schema)  # enforces nullability too
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise TableSchemaError(f"table {table_name!r}: rows do not fit the schema: {exc}") from exc
    table = table.select(stored.names).cast(stored)
    directory = Path(tables_dir) / table_name
    for key in TABLE_PARTITIONS.get(table_name, ()):
        directory = directory / f"{key}={partition[key]}"
    token = uuid.uuid4().hex[:12]
    final_path = directory / f"part-{run_id}-{token}.parquet"
    tmp_path = directory / f".part-{run_id}-{token}.parquet.tmp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tmp_path)
        tmp_path.replace(final_path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise OutputWriteError(
            f"cannot write the {table_name!r} table under {directory}: {exc.strerror or exc}. "
            f"Free space (or fix permissions) and run again; {len(rows)} row(s) of this run are "
            "also in its run record."
        ) from exc
    return final_path


def _check_partition(table_name: str, partition: Mapping[str, str]) -> dict[str, str]:
    keys = TABLE_PARTITIONS.get(table_name, ())
    if set(partition) != set(keys):
        raise TableSchemaError(
            f"table {table_name!r} is partitioned by {list(keys)}, not {sorted(partition)}"
        )
    for key, value in partition.items():
        text = str(value)
        if not text or "/" in text or "=" in text or text.startswith("."):
            raise TableSchemaError(f"table {table_name!r}: {key}={text!r} is not a directory name")
    return {k: str(v) for k, v in partition.items()}


def _partitioning(table_name: str) -> ds.Partitioning | None:
    keys = TABLE_PARTITIONS.get(table_name, ())
    if not keys:
        return None
    return ds.partitioning(pa.schema([(k, pa.string()) for k in keys]), flavor="hive")


def read_table(tables_dir: Path, table_name: str) -> pa.Table:
    """Read every committed part of a table (hidden temporaries are ignored), declared schema.

    Partition keys come from the directory names, typed as the schema declares (a model_id of
    digits stays a string). Parts written before the keys left the files are read too.
    """
    directory = Path(tables_dir) / table_name
    schema = TABLE_SCHEMAS[table_name]
    if not directory.exists():
        return schema.empty_table()
    schema = _with_model_columns(schema, _committed_parts(directory))
    dataset = ds.dataset(
        directory,
        schema=schema,
        format="parquet",
        partitioning=_partitioning(table_name),
        exclude_invalid_files=True,
    )
    return dataset.to_table()


def read_part(path: Path, table_name: str) -> pa.Table:
    """One part file of a table, with its partition keys (from its directory names) put back."""
    path = Path(path)
    keys = TABLE_PARTITIONS.get(table_name, ())
    values: dict[str, str] = {}
    for directory in path.parents:
        key, sep, value = directory.name.partition("=")
        if sep and key in keys and key not in values:
            values[key] = value
    missing = [k for k in keys if k not in values]
    if missing:
        raise TableSchemaError(f"{path}: not under a {'/'.join(missing)}=... directory")
    table = pq.read_table(path)
    for key in keys:
        if key in table.column_names:  # written before partition keys left the files
            table = table.drop_columns([key])
        table = table.append_column(key, pa.array([values[key]] * table.num_rows, pa.string()))
    schema = _with_model_columns(TABLE_SCHEMAS[table_name], [path])
    return table.select(schema.names).cast(schema)


def _committed_parts(directory: Path) -> list[Path]:
    """The table's part files, without the hidden temporaries a write in progress leaves."""
    return sorted(
        path
        for path in directory.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in path.relative_to(directory).parts)
    )


def _with_model_columns(schema: pa.Schema, parts: Sequence[Path]) -> pa.Schema:
    """The declared schema plus the per-model columns its writers add (``prob_<class>`` of
    tables/tiles and tables/slide_predictions), in the order the parts first show them."""
    extra: dict[str, pa.Field] = {}
    for part in parts:
        try:
            stored = pq.read_schema(part)
        except (OSError, pa.ArrowInvalid):
            continue  # not a readable part: the dataset skips it too
        for stored_field in stored:
            if stored_field.name.startswith(MODEL_COLUMN_PREFIXES) and stored_field.name not in (
                schema.names
            ):
                extra.setdefault(stored_field.name, stored_field.with_nullable(True))
    for added in extra.values():
        schema = schema.append(added)
    return schema
