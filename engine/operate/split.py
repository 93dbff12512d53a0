"""``slidefleet split``: write a copy of a manifest with a stratified, seeded ``split`` column.

Every row of the input is kept, with every column as written (read as text, never type-guessed);
only ``split`` is set. Relative ``path`` / ``annotation`` values are rebased when the output lives
in another folder, so the new manifest points at the same files. The strata, provider and patient
columns are chosen from the manifest unless named (see :func:`split_manifest`).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from engine.errors import ManifestError
from engine.splits import SPLITS, SplitCandidate, SplitFractions, assign_splits, strata_table
from engine.store.atomic import atomic_write_bytes

#: Columns tried, in order, when no stratum column is named (the first with any value wins).
STRATUM_COLUMNS: tuple[str, ...] = ("label", "burden_stratum", "burden", "grade", "isup_grade")
#: Columns naming where a slide comes from (centre, provider, scanner), crossed with the stratum.
SITE_COLUMNS: tuple[str, ...] = ("provider", "data_provider", "site", "centre", "center", "scanner")
#: Columns naming the patient or case; a group's slides share one split.
GROUP_COLUMNS: tuple[str, ...] = ("patient_id", "patient", "case_id", "case")
_PATH_COLUMNS = ("path", "annotation")
_MISSING = "(none)"


@dataclass(frozen=True)
class SplitReport:
    """What ``split`` did: where it wrote, by what it stratified, and the strata per split."""

    out_path: Path
    stratum_column: str | None
    site_column: str | None
    group_column: str | None
    slides: int
    groups: int
    changed: int  # rows whose split differs from the input's
    strata: dict[str, dict[str, int]]

    def lines(self) -> list[str]:
        by = " × ".join(c for c in (self.stratum_column, self.site_column) if c) or "nothing"
        grouped = (
            f", patients/cases kept whole by {self.group_column!r}" if self.group_column else ""
        )
        width = max([len("stratum"), *(len(s) for s in self.strata)])
        out = [
            f"wrote {self.out_path}: {self.slides} slides in {self.groups} groups, "
            f"stratified by {by}{grouped}; {self.changed} split values changed",
            f"{'stratum':<{width}}  " + "  ".join(f"{s:>11}" for s in SPLITS),
        ]
        for stratum, counts in self.strata.items():
            out.append(f"{stratum:<{width}}  " + "  ".join(f"{counts[s]:>11}" for s in SPLITS))
        totals = {s: sum(c[s] for c in self.strata.values()) for s in SPLITS}
        out.append(f"{'all':<{width}}  " + "  ".join(f"{totals[s]:>11}" for s in SPLITS))
        return out


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str | None]]]:
    if not path.is_file():
        raise ManifestError(f"manifest not found (or not a regular file): {path}")
    if path.suffix.lower() in {".parquet", ".pq"}:
        table = pq.read_table(path)
        table = table.cast(pa.schema([pa.field(n, pa.string()) for n in table.column_names]))
        return list(table.column_names), table.to_pylist()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"{path}: not UTF-8 text near byte {exc.start}; save the manifest as UTF-8 CSV"
        ) from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = [dict(row) for row in reader]
    return list(reader.fieldnames or []), rows


def _value(row: dict[str, str | None], column: str | None) -> str | None:
    if column is None:
        return None
    value = row.get(column)
    value = value.strip() if isinstance(value, str) else value
    return value or None


def _pick(columns: Sequence[str], named: str | None, candidates: Sequence[str], rows) -> str | None:
    if named is not None:
        if named not in columns:
            raise ManifestError(f"column {named!r} is not in the manifest (it has {list(columns)})")
        return named
    for column in candidates:
        if column in columns and any(_value(row, column) for row in rows):
            return column
    return None


def _rebase(value: str | None, source_dir: Path, out_dir: Path) -> str | None:
    if not value or Path(value).expanduser().is_absolute() or source_dir == out_dir:
        return value
    return os.path.relpath(source_dir / value, out_dir)


def _encode(columns: list[str], rows: list[dict[str, str | None]], suffix: str) -> bytes:
    if suffix in {".parquet", ".pq"}:
        table = pa.Table.from_pylist(rows, schema=pa.schema([(c, pa.string()) for c in columns]))
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        return sink.getvalue().to_pybytes()
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows({c: ("" if row.get(c) is None else row[c]) for c in columns} for row in rows)
    return buffer.getvalue().encode("utf-8")


def split_manifest(
    manifest: Path | str,
    out: Path | str,
    *,
    fractions: SplitFractions | None = None,
    seed: int = 0,
    stratify_by: str | None = None,
    site_column: str | None = None,
    group_by: str | None = None,
) -> SplitReport:
    """Write ``out``: the manifest with ``split`` set, stratified and grouped, seeded.

    Columns are found by name unless given: the stratum is the first of :data:`STRATUM_COLUMNS`
    with values, the site the first of :data:`SITE_COLUMNS`, the group the first of
    :data:`GROUP_COLUMNS` (no group column: each slide is its own group). A row without a stratum
    value falls in the stratum ``(none)``.
    """
    manifest, out = Path(manifest), Path(out)
    fractions = fractions or SplitFractions()
    columns, rows = _read_rows(manifest)
    if "slide_id" not in columns:
        raise ManifestError(f"{manifest}: no 'slide_id' column (it has {columns})")
    stratum_column = _pick(columns, stratify_by, STRATUM_COLUMNS, rows)
    site = _pick(columns, site_column, SITE_COLUMNS, rows)
    group_column = _pick(columns, group_by, GROUP_COLUMNS, rows)

    candidates: list[SplitCandidate] = []
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        slide_id = _value(row, "slide_id")
        if slide_id is None:
            raise ManifestError(
                f"{manifest.name}, line {number}: empty slide_id; every row needs one"
            )
        parts = [_value(row, stratum_column) or _MISSING] if stratum_column else ["all"]
        if site:
            parts.append(_value(row, site) or _MISSING)
        group = _value(row, group_column) if group_column else None
        candidates.append(
            SplitCandidate(
                slide_id, " / ".join(parts), f"group:{group}" if group else f"slide:{slide_id}"
            )
        )
    assignment = assign_splits(candidates, fractions, seed=seed)

    out_columns = columns if "split" in columns else [*columns, "split"]
    source_dir, out_dir = manifest.resolve().parent, out.resolve().parent
    changed = 0
    written: list[dict[str, str | None]] = []
    for row, candidate in zip(rows, candidates, strict=True):
        new = dict(row)
        for column in _PATH_COLUMNS:
            if column in new:
                new[column] = _rebase(_value(row, column), source_dir, out_dir)
        new["split"] = assignment[candidate.slide_id]
        changed += int(_value(row, "split") != new["split"])
        written.append(new)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, _encode(out_columns, written, out.suffix.lower()))
    return SplitReport(
        out_path=out,
        stratum_column=stratum_column,
        site_column=site,
        group_column=group_column,
        slides=len(candidates),
        groups=len({c.group for c in candidates}),
        changed=changed,
        strata=strata_table(candidates, assignment),
    )
