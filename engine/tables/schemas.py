"""The Arrow schema of every table SlideFleet writes. ``schemas/arrow/<table>.json`` mirrors these."""

from __future__ import annotations

from typing import Any

import pyarrow as pa


def _field(name: str, type_: pa.DataType, description: str, *, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"description": description})


PROVENANCE_FIELDS = [
    _field("run_id", pa.string(), "Run that wrote the row (runs/<run_id>.json)."),
    _field("engine_version", pa.string(), "SlideFleet version that wrote the row."),
    _field("written_at", pa.timestamp("ms", tz="UTC"), "When the row was written (UTC)."),
]

FAILURES_SCHEMA = pa.schema(
    [
        _field("stage", pa.string(), "Pipeline stage: manifest, ingest, infer, post, views."),
        _field("slide_id", pa.string(), "Slide the failure belongs to."),
        _field("error_type", pa.string(), "Exception class, e.g. MissingMpp, SlideUnreadable."),
        _field("message", pa.string(), "What went wrong and what to do about it."),
        _field("source_path", pa.string(), "Slide or annotation file involved, if any.", nullable=True),
        _field("model_id", pa.string(), "Model involved (infer/post), if any.", nullable=True),
        *PROVENANCE_FIELDS,
    ]
)

INGESTED_SLIDES_SCHEMA = pa.schema(
    [
        _field("slide_id", pa.string(), "Slide identifier from the manifest."),
        _field("source_path", pa.string(), "Slide file that was converted."),
        _field("source_sha256", pa.string(), "sha256 of the slide file (and companions)."),
        _field("vendor", pa.string(), "OpenSlide vendor of the file."),
        _field("width_px", pa.int64(), "Level-0 width in pixels."),
        _field("height_px", pa.int64(), "Level-0 height in pixels."),
        _field("mpp", pa.float64(), "Microns per pixel at level 0."),
        _field("mpp_source", pa.string(), "'slide' (from the file) or 'manifest' (override)."),
        _field("levels", pa.int32(), "Pyramid levels in the OME-Zarr store."),
        _field("tissue_fraction", pa.float64(), "Fraction of the slide area detected as tissue."),
        _field("tissue_area_mm2", pa.float64(), "Detected tissue area in mm²."),
        _field("annotation_path", pa.string(), "Ground-truth file, if any.", nullable=True),
        _field("annotated_area_mm2", pa.float64(), "Area of non-background ground truth in mm².", nullable=True),
        _field("split", pa.string(), "train / calibration / test.", nullable=True),
        _field("label", pa.string(), "Slide-level label from the manifest.", nullable=True),
        _field("store_path", pa.string(), "Path of the OME-Zarr store."),
        _field("params_hash", pa.string(), "Hash of the ingest parameters that made the store."),
        _field("seconds", pa.float64(), "Wall time of the conversion."),
        _field("skipped", pa.bool_(), "True when an up-to-date store was reused."),
        *PROVENANCE_FIELDS,
    ]
)

INFERRED_SCHEMA = pa.schema(
    [
        _field("slide_id", pa.string(), "Slide identifier."),
        _field("model_id", pa.string(), "Content hash of the model file and card."),
        _field("model", pa.string(), "Model name:version."),
        _field("tiles", pa.int64(), "Tissue tiles scored."),
        _field("units", pa.int64(), "Work units (output chunks) written."),
        _field("seconds", pa.float64(), "Wall time from the slide's first unit to its commit."),
        _field("read_seconds", pa.float64(), "Summed time actors spent reading and resampling tiles."),
        _field("model_seconds", pa.float64(), "Summed time actors held the model for this slide."),
        _field("unit_retries", pa.int64(), "Units re-run because an actor died for good."),
        *PROVENANCE_FIELDS,
    ]
)

TABLE_SCHEMAS: dict[str, pa.Schema] = {
    "failures": FAILURES_SCHEMA,
    "ingested": INGESTED_SLIDES_SCHEMA,
    "inferred": INFERRED_SCHEMA,
}


def schema_to_json(schema: pa.Schema) -> dict[str, Any]:
    """A stable JSON description of an Arrow schema (the checked-in contract)."""
    return {
        "fields": [
            {
                "name": field.name,
                "type": str(field.type),
                "nullable": field.nullable,
                "description": (field.metadata or {}).get(b"description", b"").decode(),
            }
            for field in schema
        ]
    }
