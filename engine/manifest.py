"""The cohort manifest (CSV or Parquet): which slides, where, with what ground truth.

Columns: ``slide_id``, ``path`` (relative to the manifest's folder, or absolute), and optional
``annotation``, ``split``, ``label``, ``mpp`` (an override for a slide without a trustworthy mpp).
Extra columns are kept as-is. JSON Schema: ``schemas/manifest.schema.json``.

Reading rules (what a lab manager exporting from Excel, R or pandas expects):

* every CSV cell is text; nothing is type-guessed (``0001`` stays ``"0001"``, ``NA`` stays ``"NA"``);
  an empty cell is the only missing value, except in ``mpp`` and ``split``, whose schema cannot
  hold text such as ``NA`` / ``N/A`` / ``nan`` / ``null`` / ``None``: there those mean "not given";
* the file is UTF-8, with or without a BOM (``utf-8-sig``, as Excel writes it); rows are decoded
  one by one, so a non-UTF-8 byte rejects only its row, naming the row and the column;
* a bad header, a missing required column or an unreadable file is a :class:`ManifestError`;
* duplicate slide IDs reject every row sharing the ID, each naming the other rows.
"""

from __future__ import annotations

import csv
import io
import math
import stat
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.errors import InvalidSlideId, ManifestError, SlideFleetError
from engine.ids import check_slide_id, shorten

Split = Literal["train", "calibration", "test"]
REQUIRED_COLUMNS = ("slide_id", "path")
# Spellings of "no value" that R, pandas and spreadsheets write; honoured only in columns whose
# schema cannot hold that text (a number, a split name), never in IDs, paths or labels.
MISSING_MARKERS = frozenset({"na", "n/a", "nan", "null", "none"})
_MARKER_COLUMNS = ("mpp", "split")
# A manifest is a small text table; anything larger is almost surely the wrong file.
MAX_MANIFEST_BYTES = 256 * 1024 * 1024


class ManifestRow(BaseModel):
    """One manifest row as written by a user (the on-disk contract)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    slide_id: str = Field(
        description="Unique slide identifier; becomes a file name, so 1-128 of [A-Za-z0-9._-]."
    )
    path: str = Field(description="Slide file, relative to the manifest's folder or absolute.")
    annotation: str | None = Field(
        default=None, description="Ground-truth file (ASAP XML, GeoJSON, NCRF JSON, label mask)."
    )
    split: Split | None = Field(default=None, description="train, calibration or test.")
    label: str | None = Field(default=None, description="Slide-level label, e.g. tumor / normal.")
    mpp: float | None = Field(
        default=None,
        gt=0,
        description="Microns per pixel override for slides without a trustworthy one.",
    )


@dataclass(frozen=True)
class SlideEntry:
    """A manifest row resolved against the manifest's location."""

    slide_id: str
    path: Path
    annotation: Path | None = None
    split: str | None = None
    label: str | None = None
    mpp_override: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    row: int | None = None  # 1-based data row in the manifest (header not counted)


@dataclass(frozen=True)
class RejectedRow:
    """A row that cannot be processed, with the error that will become a failures row."""

    slide_id: str
    error: SlideFleetError
    row: int | None = None


@dataclass(frozen=True)
class Manifest:
    source: Path
    entries: tuple[SlideEntry, ...]
    rejected: tuple[RejectedRow, ...]


@dataclass(frozen=True)
class _RawRow:
    """One data row before validation: its cells, or why it could not be read at all."""

    number: int  # 1-based data row
    where: str  # "row 3 (line 4)" for CSV, "row 3" for Parquet
    cells: dict[str, Any]
    problem: str | None = None


def _check_file(path: Path) -> int:
    """Refuse what is not a readable regular file of sane size before opening it."""
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        raise ManifestError(f"manifest not found: {path}") from exc
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the manifest: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(info.st_mode) and path.suffix.lower() in {".parquet", ".pq"}:
        return info.st_size  # a partitioned Parquet dataset is a folder
    if not stat.S_ISREG(info.st_mode):
        raise ManifestError(
            f"{path}: the manifest is not a regular file (a folder, device or pipe)"
        )
    if info.st_size > MAX_MANIFEST_BYTES:
        raise ManifestError(
            f"{path}: {info.st_size:,} bytes is too large for a manifest "
            f"(limit {MAX_MANIFEST_BYTES:,}); is this the right file?"
        )
    return info.st_size


def _bad_text(value: str) -> int | None:
    """Index of the first undecodable byte (kept as a lone surrogate by ``surrogateescape``)."""
    for index, char in enumerate(value):
        if "\udc80" <= char <= "\udcff":
            return index
    return None


def _printable(value: str) -> str:
    return shorten(value.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))


def _csv_rows(path: Path) -> tuple[list[str], Iterator[_RawRow]]:
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ManifestError(
            f"{path.name}: the manifest is UTF-16 text; save it as 'CSV UTF-8 (comma delimited)'"
        )
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    text = data.decode("utf-8", "surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ManifestError(f"{path.name}: the manifest is empty (no header line)") from None
    except csv.Error as exc:
        raise ManifestError(f"{path.name}: cannot parse the header line: {exc}") from exc
    header = [name.strip() for name in header]
    for position, name in enumerate(header, start=1):
        if _bad_text(name) is not None:
            raise ManifestError(
                f"{path.name}: the header (line 1) is not UTF-8 text at column {position} "
                f"({_printable(name)!r}); save the manifest as 'CSV UTF-8'"
            )
    duplicated = sorted({name for name in header if header.count(name) > 1 and name})
    if duplicated:
        raise ManifestError(f"{path.name}: the header names column(s) {duplicated} more than once")

    def rows() -> Iterator[_RawRow]:
        number, line = 0, reader.line_num + 1
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                number += 1
                yield _RawRow(
                    number, f"row {number} (line {line})", {}, f"cannot parse the CSV: {exc}"
                )
                line = reader.line_num + 1
                continue
            start, line = line, reader.line_num + 1
            if not values or all(not v.strip() for v in values):
                continue  # blank line
            number += 1
            where = f"row {number} (line {start})"
            cells = dict(zip(header, values, strict=False))
            problem = None
            if len(values) != len(header):
                problem = (
                    f"has {len(values)} value(s) but the header has {len(header)} column(s); "
                    "quote cells that contain a comma"
                )
            for name, value in cells.items():
                index = _bad_text(value)
                if index is not None:
                    problem = (
                        f"column {name!r} is not UTF-8 text (byte 0x{ord(value[index]) - 0xDC00:02X} "
                        f"at character {index + 1} of {_printable(value)!r}); save the manifest as 'CSV UTF-8'"
                    )
                    cells[name] = None
                    break
            yield _RawRow(number, where, cells, problem)

    return header, rows()


def _parquet_rows(path: Path) -> tuple[list[str], Iterator[_RawRow]]:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"{path.name}: cannot read the Parquet manifest: {exc}") from exc

    def rows() -> Iterator[_RawRow]:
        for index in range(table.num_rows):
            where = f"row {index + 1}"
            try:
                (cells,) = table.slice(index, 1).to_pylist()
            except (UnicodeDecodeError, pa.ArrowException) as exc:
                yield _RawRow(index + 1, where, {}, f"cannot decode the row: {exc}")
                continue
            yield _RawRow(index + 1, where, cells)

    return list(table.column_names), rows()


def _clean(column: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str):
        value = value.strip()
        if column in _MARKER_COLUMNS and value.lower() in MISSING_MARKERS:
            return None
        return value or None
    if column in ManifestRow.model_fields and column != "mpp":
        return str(value)  # a Parquet integer ID column: the ID is its text
    return value


def _resolve(base: Path, value: str) -> Path:
    candidate = Path(value).expanduser()
    return candidate if candidate.is_absolute() else (base / candidate)


def _validation_problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
        + (f" (got {shorten(str(err['input']))!r})" if isinstance(err.get("input"), str) else "")
        for err in exc.errors()
    )


def read_manifest(path: Path | str) -> Manifest:
    """Read and validate a manifest; bad rows are returned as rejected, never silently dropped.

    Raises :class:`ManifestError` when the file itself is unusable (unreadable, not a regular
    file, a header that is not UTF-8, missing columns). Every other problem rejects one row with
    its row number; the good rows are kept. Duplicate slide IDs reject every row that shares the
    ID: which one was meant is ambiguous.
    """
    path = Path(path)
    _check_file(path)
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            columns, raw_rows = _parquet_rows(path)
        else:
            columns, raw_rows = _csv_rows(path)
        raw = list(raw_rows)
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the manifest: {exc.strerror or exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ManifestError(
            f"{path}: the manifest lacks required column(s) {missing}; it has {columns}."
        )
    base = path.parent
    cleaned = [{k: _clean(k, v) for k, v in r.cells.items()} for r in raw]
    rows_of: dict[str, list[int]] = defaultdict(list)
    for r, cells in zip(raw, cleaned, strict=True):
        if isinstance(cells.get("slide_id"), str):
            rows_of[cells["slide_id"]].append(r.number)
    entries: list[SlideEntry] = []
    rejected: list[RejectedRow] = []
    known = set(ManifestRow.model_fields)
    for r, cells in zip(raw, cleaned, strict=True):
        raw_id = cells.get("slide_id")
        slide_id = raw_id if isinstance(raw_id, str) else f"<row {r.number}>"
        label = shorten(slide_id)
        prefix = f"{path.name}, {r.where}"
        try:
            if r.problem is not None:
                raise ManifestError(f"{prefix}: {r.problem}")
            if raw_id is None:
                raise InvalidSlideId(f"{prefix}: empty slide_id; every row needs one")
            others = [n for n in rows_of[slide_id] if n != r.number]
            if others:
                raise InvalidSlideId(
                    f"{prefix}: slide_id {label!r} is also on row(s) {', '.join(map(str, others))}; "
                    "slide IDs must be unique, so none of these rows is processed."
                )
            try:
                check_slide_id(slide_id)
            except InvalidSlideId as exc:
                raise InvalidSlideId(f"{prefix}: {exc}") from exc
            row = ManifestRow.model_validate(cells)
        except ValidationError as exc:
            rejected.append(
                RejectedRow(
                    label, ManifestError(f"{prefix}: {_validation_problems(exc)}"), r.number
                )
            )
            continue
        except SlideFleetError as exc:
            rejected.append(RejectedRow(label, exc, r.number))
            continue
        entries.append(
            SlideEntry(
                slide_id=row.slide_id,
                path=_resolve(base, row.path),
                annotation=_resolve(base, row.annotation) if row.annotation else None,
                split=row.split,
                label=row.label,
                mpp_override=row.mpp,
                extra={k: v for k, v in cells.items() if k not in known},
                row=r.number,
            )
        )
    return Manifest(source=path, entries=tuple(entries), rejected=tuple(rejected))
