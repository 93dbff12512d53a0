"""Parquet tables with declared Arrow schemas (one schema per table, enforced on write)."""

from engine.tables.failures import FailureRecord, read_failures, write_failures
from engine.tables.resolution import failures_view
from engine.tables.schemas import TABLE_PARTITIONS, TABLE_SCHEMAS, file_schema, schema_to_json
from engine.tables.writer import read_part, read_table, write_table_part

__all__ = [
    "TABLE_PARTITIONS",
    "TABLE_SCHEMAS",
    "FailureRecord",
    "failures_view",
    "file_schema",
    "read_failures",
    "read_part",
    "read_table",
    "schema_to_json",
    "write_failures",
    "write_table_part",
]
