"""The failures table: every slide-level failure, as data, so the cohort run can go on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from engine.tables.writer import read_table, write_table_part


@dataclass(frozen=True)
class FailureRecord:
    stage: str
    slide_id: str
    error_type: str
    message: str
    source_path: str | None = None
    model_id: str | None = None

    @classmethod
    def from_exception(
        cls,
        stage: str,
        slide_id: str,
        error: BaseException,
        *,
        source_path: str | None = None,
        model_id: str | None = None,
    ) -> FailureRecord:
        message = str(error) or repr(error)
        return cls(stage, slide_id, type(error).__name__, message, source_path, model_id)


def write_failures(
    tables_dir: Path, failures: Sequence[FailureRecord], *, run_id: str
) -> Path | None:
    """Append failure rows for one run, partitioned by stage."""
    paths = []
    for stage in sorted({f.stage for f in failures}):
        rows = [f.__dict__ for f in failures if f.stage == stage]
        path = write_table_part(
            tables_dir, "failures", rows, partition={"stage": stage}, run_id=run_id
        )
        paths.append(path)
    return paths[-1] if paths else None


def read_failures(tables_dir: Path, *, run_id: str | None = None) -> pa.Table:
    """All failure rows, or those of one run."""
    table = read_table(tables_dir, "failures")
    if run_id is not None and table.num_rows:
        table = table.filter(pc.equal(table["run_id"], run_id))
    return table
