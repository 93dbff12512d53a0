"""The cohort manifest (CSV or Parquet): which slides, where, with what ground truth.

Columns: ``slide_id``, ``path`` (relative to the manifest's folder, or absolute), and optional
``annotation``, ``split``, ``label``, ``mpp`` (an override for a slide without a trustworthy mpp).
Extra columns are kept as-is. JSON Schema: ``schemas/manifest.schema.json``.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.errors import InvalidSlideId, ManifestError, SlideFleetError
from engine.ids import check_slide_id

Split = Literal["train", "calibration", "test"]
REQUIRED_COLUMNS = ("slide_id", "path")


class ManifestRow(BaseModel):
    """One manifest row as written by a user (the on-disk contract)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    slide_id: str = Field(description="Unique slide identifier; becomes a file name, so 1-128 of [A-Za-z0-9._-].")
    path: str = Field(description="Slide file, relative to the manifest's folder or absolute.")
    annotation: str | None = Field(default=None, description="Ground-truth file (ASAP XML, GeoJSON, NCRF JSON, label mask).")
    split: Split | None = Field(default=None, description="train, calibration or test.")
    label: str | None = Field(default=None, description="Slide-level label, e.g. tumor / normal.")
    mpp: float | None = Field(default=None, gt=0, description="Microns per pixel override for slides without a trustworthy one.")


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


@dataclass(frozen=True)
class RejectedRow:
    """A row that cannot be processed, with the error that will become a failures row."""

    slide_id: str
    error: SlideFleetError


@dataclass(frozen=True)
class Manifest:
    source: Path
    entries: tuple[SlideEntry, ...]
    rejected: tuple[RejectedRow, ...]


def _read_table(path: Path) -> pa.Table:
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            return pq.read_table(path)
        return _read_csv_as_text(path)
    except FileNotFoundError as exc:
        raise ManifestError(f"manifest not found: {path}") from exc
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"{path}: cannot read the manifest: {exc}") from exc


def _read_csv_as_text(path: Path) -> pa.Table:
    with path.open(newline="") as handle:
        header = next(csv.reader(handle), [])
    return pa_csv.read_csv(
        path,
        convert_options=pa_csv.ConvertOptions(
            column_types={name: pa.string() for name in header}, strings_can_be_null=True
        ),
    )


def _clean(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _resolve(base: Path, value: str) -> Path:
    candidate = Path(value).expanduser()
    return candidate if candidate.is_absolute() else (base / candidate)


def read_manifest(path: Path | str) -> Manifest:
    """Read and validate a manifest; bad rows are returned as rejected, never silently dropped.

    Raises :class:`ManifestError` when the file itself is unusable (unreadable, missing columns).
    Duplicate slide IDs reject every row that shares the ID: which one was meant is ambiguous.
    """
    path = Path(path)
    table = _read_table(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ManifestError(
            f"{path}: the manifest lacks required column(s) {missing}; it has {table.column_names}."
        )
    base = path.parent
    rows = [{k: _clean(v) for k, v in row.items()} for row in table.to_pylist()]
    counts = Counter(str(r.get("slide_id")) for r in rows)
    entries: list[SlideEntry] = []
    rejected: list[RejectedRow] = []
    for index, raw in enumerate(rows, start=1):
        slide_id = str(raw.get("slide_id")) if raw.get("slide_id") is not None else f"<row {index}>"
        try:
            if counts[slide_id] > 1:
                raise InvalidSlideId(
                    f"slide_id {slide_id!r} appears {counts[slide_id]} times in {path.name}; "
                    "slide IDs must be unique, so none of these rows is processed."
                )
            check_slide_id(slide_id)
            row = ManifestRow.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            rejected.append(RejectedRow(slide_id, ManifestError(f"row {index} of {path.name}: {problems}")))
            continue
        except SlideFleetError as exc:
            rejected.append(RejectedRow(slide_id, exc))
            continue
        known = set(ManifestRow.model_fields)
        entries.append(
            SlideEntry(
                slide_id=row.slide_id,
                path=_resolve(base, row.path),
                annotation=_resolve(base, row.annotation) if row.annotation else None,
                split=row.split,
                label=row.label,
                mpp_override=row.mpp,
                extra={k: v for k, v in raw.items() if k not in known},
            )
        )
    return Manifest(source=path, entries=tuple(entries), rejected=tuple(rejected))
