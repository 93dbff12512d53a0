"""The Arrow schema of every table SlideFleet writes. ``schemas/arrow/<table>.json`` mirrors these."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from engine.metrics.cohort import ALL, BURDEN_LABELS
from engine.tables.slide_level_schemas import SLIDE_LEVEL_SCHEMAS

LABELS_KEY = b"labels"
"""Field metadata key of a coded column's labels: a JSON object, key -> what it means."""


def _field(
    name: str,
    type_: pa.DataType,
    description: str,
    *,
    nullable: bool = False,
    labels: Mapping[str, str] | None = None,
) -> pa.Field:
    metadata = {"description": description}
    if labels is not None:
        metadata[LABELS_KEY.decode()] = json.dumps(dict(labels), ensure_ascii=False)
    return pa.field(name, type_, nullable=nullable, metadata=metadata)


def field_labels(field: pa.Field) -> dict[str, str]:
    """The labels of a coded column (``{}`` when it has none)."""
    raw = (field.metadata or {}).get(LABELS_KEY)
    return dict(json.loads(raw)) if raw else {}


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
        _field(
            "source_path", pa.string(), "Slide or annotation file involved, if any.", nullable=True
        ),
        _field("model_id", pa.string(), "Model involved (infer/post), if any.", nullable=True),
        *PROVENANCE_FIELDS,
    ]
)

# A view, computed on read (engine.tables.resolution.failures_view), never written: the newest
# failure per (stage, slide_id, model_id), and whether a later run produced that stage's output.
FAILURES_VIEW_SCHEMA = pa.schema(
    [
        *FAILURES_SCHEMA,
        _field(
            "attempts", pa.int64(), "Failure rows recorded for this (stage, slide_id, model_id)."
        ),
        _field("resolved", pa.bool_(), "A later run produced this stage's output for the slide."),
        _field(
            "resolved_at",
            pa.timestamp("ms", tz="UTC"),
            "When that later output was written (UTC); null while the failure is open.",
            nullable=True,
        ),
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
        _field(
            "annotated_area_mm2",
            pa.float64(),
            "Area of non-background ground truth in mm².",
            nullable=True,
        ),
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
        _field(
            "read_seconds", pa.float64(), "Summed time actors spent reading and resampling tiles."
        ),
        _field("model_seconds", pa.float64(), "Summed time actors held the model for this slide."),
        _field("unit_retries", pa.int64(), "Units re-run because an actor died for good."),
        *PROVENANCE_FIELDS,
    ]
)

_POST_KEYS = [
    _field("model_id", pa.string(), "Content hash of the model file and card."),
    _field("params_hash", pa.string(), "Hash of the post-processing parameters."),
]

POST_SLIDES_SCHEMA = pa.schema(
    [
        _field("slide_id", pa.string(), "Slide identifier."),
        *_POST_KEYS,
        _field("split", pa.string(), "train / calibration / test.", nullable=True),
        _field("label", pa.string(), "Slide-level label from the manifest.", nullable=True),
        _field("score_kind", pa.string(), "Scores thresholded: 'probability' or 'zscore'."),
        _field("threshold", pa.float64(), "Threshold applied (fitted on the calibration split)."),
        _field(
            "threshold_objective",
            pa.string(),
            "Objective the threshold was fitted for (iou, f1, youden), or 'fixed' (the configured fallback).",
        ),
        _field("pixel_um", pa.float64(), "Pixel size of the score map in µm."),
        _field(
            "score_mean",
            pa.float64(),
            "Mean raw score over tissue (the z-score's mean).",
            nullable=True,
        ),
        _field(
            "score_std",
            pa.float64(),
            "Std of the raw score over tissue (the z-score's std).",
            nullable=True,
        ),
        _field(
            "tissue_px",
            pa.int64(),
            "Scored tissue pixels on the score grid (what every metric and quantity counts).",
        ),
        _field(
            "unscored_tissue_px",
            pa.int64(),
            "Tissue pixels on the score grid without a score (NaN); excluded from every metric and quantity, 0 when every tissue pixel lies under a scored tile.",
        ),
        _field("tumour_px", pa.int64(), "Predicted tumour pixels on tissue after morphology."),
        _field(
            "tumour_pct_of_tissue", pa.float64(), "Predicted tumour as % of tissue.", nullable=True
        ),
        _field("tumour_mm2", pa.float64(), "Predicted tumour area in mm²."),
        _field("n_regions", pa.int64(), "Connected tumour regions after morphology."),
        _field("largest_region_mm2", pa.float64(), "Largest region in mm².", nullable=True),
        _field("has_ground_truth", pa.bool_(), "Whether an annotation label exists for the slide."),
        _field("truth_px", pa.int64(), "Ground-truth tumour pixels on tissue.", nullable=True),
        _field(
            "truth_pct_of_tissue",
            pa.float64(),
            "Ground-truth tumour as % of tissue.",
            nullable=True,
        ),
        _field(
            "burden_stratum",
            pa.string(),
            "Ground-truth tumour burden stratum (share of tissue that is tumour); keys in labels; null without ground truth.",
            nullable=True,
            labels=BURDEN_LABELS,
        ),
        _field("tp", pa.int64(), "True-positive pixels.", nullable=True),
        _field("fp", pa.int64(), "False-positive pixels.", nullable=True),
        _field("fn", pa.int64(), "False-negative pixels.", nullable=True),
        _field("tn", pa.int64(), "True-negative pixels.", nullable=True),
        _field(
            "case", pa.string(), "both_empty, fp_only, fn_only, disjoint or overlap.", nullable=True
        ),
        _field("iou", pa.float64(), "Intersection over union; null when undefined.", nullable=True),
        _field("dice", pa.float64(), "Dice coefficient; null when undefined.", nullable=True),
        _field(
            "precision", pa.float64(), "Precision; null when nothing is predicted.", nullable=True
        ),
        _field(
            "recall",
            pa.float64(),
            "Recall (sensitivity); null when there is no tumour.",
            nullable=True,
        ),
        _field(
            "specificity",
            pa.float64(),
            "Specificity; null when everything is tumour.",
            nullable=True,
        ),
        _field(
            "pearson", pa.float64(), "Pearson correlation of score and ground truth.", nullable=True
        ),
        _field("pixel_auc", pa.float64(), "Pixel-level ROC AUC.", nullable=True),
        _field("patch_auc", pa.float64(), "Patch-level ROC AUC.", nullable=True),
        _field(
            "oracle_threshold",
            pa.float64(),
            "Per-slide best threshold (oracle: uses this slide's truth).",
            nullable=True,
        ),
        _field(
            "oracle_value",
            pa.float64(),
            "Objective at the oracle threshold (oracle).",
            nullable=True,
        ),
        _field(
            "confusion_matrix",
            pa.list_(pa.list_(pa.int64())),
            "Multi-class models: pixel confusion matrix over tissue, rows = truth class, columns = argmax class.",
            nullable=True,
        ),
        _field(
            "class_iou",
            pa.list_(pa.float64()),
            "Multi-class models: IoU per class (null when undefined).",
            nullable=True,
        ),
        _field(
            "class_dice",
            pa.list_(pa.float64()),
            "Multi-class models: Dice per class (null when undefined).",
            nullable=True,
        ),
        _field(
            "miou",
            pa.float64(),
            "Multi-class models: mean IoU over defined classes.",
            nullable=True,
        ),
        _field(
            "macro_dice",
            pa.float64(),
            "Multi-class models: mean Dice over defined classes.",
            nullable=True,
        ),
        *PROVENANCE_FIELDS,
    ]
)

REGIONS_SCHEMA = pa.schema(
    [
        _field("slide_id", pa.string(), "Slide identifier."),
        *_POST_KEYS,
        _field("region_id", pa.int64(), "Region number within the slide (raster order)."),
        _field("area_px", pa.int64(), "Area in score-map pixels."),
        _field("area_um2", pa.float64(), "Area in µm²."),
        _field("centroid_x_level0_px", pa.float64(), "Centroid x in level-0 pixels."),
        _field("centroid_y_level0_px", pa.float64(), "Centroid y in level-0 pixels."),
        _field("bbox_x0_level0_px", pa.float64(), "Bounding box left, level-0 pixels."),
        _field("bbox_y0_level0_px", pa.float64(), "Bounding box top, level-0 pixels."),
        _field(
            "bbox_x1_level0_px", pa.float64(), "Bounding box right (exclusive), level-0 pixels."
        ),
        _field(
            "bbox_y1_level0_px", pa.float64(), "Bounding box bottom (exclusive), level-0 pixels."
        ),
        _field("mean_score", pa.float64(), "Mean score over the region.", nullable=True),
        _field("max_score", pa.float64(), "Maximum score in the region.", nullable=True),
        _field(
            "outline_wkb",
            pa.binary(),
            "The region's outline with its holes: a WKB polygon in level-0 pixels (x right, y down), traced midway between region and background pixel centres; views draw and export exactly this.",
            nullable=True,
        ),
        *PROVENANCE_FIELDS,
    ]
)

THRESHOLDS_SCHEMA = pa.schema(
    [
        *_POST_KEYS,
        _field("fitted_on", pa.string(), "Split the sweep was computed on (e.g. calibration)."),
        _field("n_slides_fitted", pa.int64(), "Slides of that split whose counts were summed."),
        _field("score_kind", pa.string(), "'probability' or 'zscore'."),
        _field("threshold", pa.float64(), "Grid threshold."),
        _field("tp", pa.int64(), "Pooled true-positive pixels."),
        _field("fp", pa.int64(), "Pooled false-positive pixels."),
        _field("fn", pa.int64(), "Pooled false-negative pixels."),
        _field("tn", pa.int64(), "Pooled true-negative pixels."),
        _field("iou", pa.float64(), "Pooled IoU at this threshold.", nullable=True),
        _field("f1", pa.float64(), "Pooled F1 at this threshold.", nullable=True),
        _field("youden", pa.float64(), "Youden's J at this threshold.", nullable=True),
        _field("precision", pa.float64(), "Pooled precision.", nullable=True),
        _field("recall", pa.float64(), "Pooled recall.", nullable=True),
        _field(
            "chosen_for",
            pa.string(),
            "Objective(s) this threshold was chosen for, comma-separated.",
            nullable=True,
        ),
        *PROVENANCE_FIELDS,
    ]
)

COHORT_SCHEMA = pa.schema(
    [
        *_POST_KEYS,
        _field("scope", pa.string(), "all, a split, a burden stratum, or split x stratum."),
        _field("split", pa.string(), "Split of the scope ('all' when not restricted)."),
        _field(
            "burden",
            pa.string(),
            "Burden stratum of the scope ('all' when not restricted); keys in labels.",
            labels={**BURDEN_LABELS, ALL: "every stratum"},
        ),
        _field("statistic", pa.string(), "e.g. micro_iou, macro_dice, median_iou, n_case_fp_only."),
        _field("value", pa.float64(), "Value; null when undefined for every slide.", nullable=True),
        _field("n_slides", pa.int64(), "Slides the scope covers, with or without ground truth."),
        _field(
            "n_slides_without_truth",
            pa.int64(),
            "Of those, slides without ground truth: they enter no figure (0 in a burden scope).",
        ),
        _field(
            "n_undefined",
            pa.int64(),
            "Slides with ground truth whose per-slide value was undefined (left out of macro / median).",
        ),
        *PROVENANCE_FIELDS,
    ]
)

#: The QC measures judged against the cohort by a robust z-score (``z_<column>`` in tables/qc).
QC_Z_COLUMNS: tuple[str, ...] = (
    "tissue_area_mm2",
    "brightness",
    "contrast",
    "hematoxylin_od",
    "eosin_od",
    "laplacian_var_median",
    "blurred_tile_fraction",
    "pen_fraction",
    "dark_fraction",
    "white_fraction",
    "annotation_density_per_mm2",
    "annotation_area_um2_median",
)

QC_SCHEMA = pa.schema(
    [
        _field("slide_id", pa.string(), "Slide identifier."),
        _field("pixel_um", pa.float64(), "Resolution (µm/px) the slide was judged at."),
        _field("level_path", pa.string(), "Pyramid level read (array path in the store)."),
        _field("tissue_area_mm2", pa.float64(), "Tissue area in mm²."),
        _field("tissue_fraction", pa.float64(), "Fraction of the slide that is tissue."),
        _field("brightness", pa.float64(), "Mean luminance on tissue (0-1).", nullable=True),
        _field(
            "contrast", pa.float64(), "RMS contrast: std of luminance on tissue.", nullable=True
        ),
        _field("saturation", pa.float64(), "Mean HSV saturation on tissue.", nullable=True),
        _field(
            "hematoxylin_od",
            pa.float64(),
            "Mean haematoxylin density (rgb2hed) on tissue.",
            nullable=True,
        ),
        _field("eosin_od", pa.float64(), "Mean eosin density (rgb2hed) on tissue.", nullable=True),
        _field(
            "stain_vector_h",
            pa.list_(pa.float64()),
            "Macenko haematoxylin OD vector (r, g, b).",
            nullable=True,
        ),
        _field(
            "stain_vector_e",
            pa.list_(pa.float64()),
            "Macenko eosin OD vector (r, g, b).",
            nullable=True,
        ),
        _field(
            "laplacian_var_median",
            pa.float64(),
            "Median Laplacian variance of tissue tiles (sharpness).",
            nullable=True,
        ),
        _field(
            "blurred_tile_fraction",
            pa.float64(),
            "Share of tissue tiles below the blur threshold.",
            nullable=True,
        ),
        _field("tissue_tiles", pa.int64(), "Tissue tiles blur was measured on."),
        _field("pen_fraction", pa.float64(), "Share of the slide under pen ink (green-blue hues)."),
        _field(
            "dark_fraction", pa.float64(), "Share of near-black pixels (debris, folds, marker)."
        ),
        _field("white_fraction", pa.float64(), "Share of saturated white pixels."),
        _field(
            "annotation_objects", pa.int64(), "Positive annotation objects as drawn.", nullable=True
        ),
        _field(
            "annotation_degenerate",
            pa.int64(),
            "Objects with < 3 vertices, zero area or self-intersecting.",
            nullable=True,
        ),
        _field(
            "annotation_outside_slide",
            pa.int64(),
            "Objects reaching beyond the slide's edge.",
            nullable=True,
        ),
        _field("annotation_off_tissue", pa.int64(), "Objects mostly on glass.", nullable=True),
        _field(
            "annotation_density_per_mm2", pa.float64(), "Objects per mm² of tissue.", nullable=True
        ),
        _field(
            "annotation_area_um2_min", pa.float64(), "Smallest object area (µm²).", nullable=True
        ),
        _field(
            "annotation_area_um2_median", pa.float64(), "Median object area (µm²).", nullable=True
        ),
        _field(
            "annotation_area_um2_max", pa.float64(), "Largest object area (µm²).", nullable=True
        ),
        _field(
            "annotation_positive_fraction",
            pa.float64(),
            "Annotated positive area / tissue area.",
            nullable=True,
        ),
        *(
            _field(
                f"z_{column}",
                pa.float64(),
                f"Cohort robust z-score of {column}: (x - median) / (1.4826 MAD) over the slides "
                "judged together; +/-inf when most slides share the median exactly, null when the "
                "measure is.",
                nullable=True,
            )
            for column in QC_Z_COLUMNS
        ),
        _field(
            "flags",
            pa.list_(pa.string()),
            "QC flags raised (blur, pen, stain, annotation_density, ...).",
        ),
        _field(
            "reasons",
            pa.list_(pa.string()),
            "One sentence per flag: the measure, its value and the limit or cohort median.",
        ),
        _field(
            "excluded",
            pa.bool_(),
            "True when a flag in qc.exclude keeps the slide out of inference.",
        ),
        _field("params_hash", pa.string(), "Hash of the QC parameters."),
        _field("seconds", pa.float64(), "Wall seconds measuring the slide (read + measures)."),
        *PROVENANCE_FIELDS,
    ]
)

EXPLANATIONS_SCHEMA = pa.schema(
    [
        _field("slide_id", pa.string(), "Slide the tile is on."),
        _field("model_id", pa.string(), "Content hash of the model file and card."),
        _field(
            "kind",
            pa.string(),
            "Why the tile was sampled: top_scored, false_positive or false_negative.",
        ),
        _field("rank", pa.int64(), "1 = the top-scored / worst tile of its kind on the slide."),
        _field(
            "x_um", pa.float64(), "Left edge of the tile's kept region, µm from the slide's origin."
        ),
        _field(
            "y_um", pa.float64(), "Top edge of the tile's kept region, µm from the slide's origin."
        ),
        _field("size_um", pa.float64(), "Side of the tile's kept region (µm)."),
        _field(
            "mean_score", pa.float64(), "Mean score of the explained class on the tile's tissue."
        ),
        _field("tissue_fraction", pa.float64(), "Share of the tile that is scored tissue."),
        _field(
            "predicted_fraction",
            pa.float64(),
            "Share of the tile's tissue predicted positive.",
            nullable=True,
        ),
        _field(
            "truth_fraction",
            pa.float64(),
            "Share of the tile's tissue annotated positive.",
            nullable=True,
        ),
        _field(
            "fp_fraction",
            pa.float64(),
            "Share of the tile's tissue predicted but not annotated.",
            nullable=True,
        ),
        _field(
            "fn_fraction",
            pa.float64(),
            "Share of the tile's tissue annotated but not predicted.",
            nullable=True,
        ),
        _field("explained_class", pa.string(), "Class whose score the attribution explains."),
        _field(
            "explained_score",
            pa.float64(),
            "The explained quantity: the model's mean class score on the kept region, recomputed.",
        ),
        _field("method", pa.string(), "grad_cam or input_x_gradient."),
        _field("note", pa.string(), "Why this method (e.g. TorchScript modules cannot be hooked)."),
        _field(
            "explanation_file",
            pa.string(),
            "Attribution PNG beside the views (views/<model_id>/explain/).",
        ),
        _field("gallery_file", pa.string(), "The slide's patch gallery PNG beside the views."),
        _field(
            "seconds",
            pa.float64(),
            "Seconds computing the attribution, per tile (the slide's batch / tiles).",
        ),
        *PROVENANCE_FIELDS,
    ]
)

CONFUSION_SCHEMA = pa.schema(
    [
        _field("slide_id", pa.string(), "Slide."),
        _field("model_id", pa.string(), "Content hash of the model file and card."),
        _field("split", pa.string(), "Split of the slide (from post), if any.", nullable=True),
        _field(
            "scope",
            pa.string(),
            "all_tissue, or non_homogeneous: only tiles with more than one true class.",
        ),
        _field("class_names", pa.list_(pa.string()), "Classes, in matrix order."),
        _field(
            "matrix",
            pa.list_(pa.list_(pa.int64())),
            "Pixel counts, rows = true class, columns = argmax class, on scored tissue.",
        ),
        _field("tiles", pa.int64(), "Tiles (kept model-tile regions) counted in the scope."),
        *PROVENANCE_FIELDS,
    ]
)

TABLE_SCHEMAS: dict[str, pa.Schema] = {
    "failures": FAILURES_SCHEMA,
    "ingested": INGESTED_SLIDES_SCHEMA,
    "inferred": INFERRED_SCHEMA,
    "slides": POST_SLIDES_SCHEMA,
    "regions": REGIONS_SCHEMA,
    "thresholds": THRESHOLDS_SCHEMA,
    "cohort": COHORT_SCHEMA,
    "qc": QC_SCHEMA,
    "explanations": EXPLANATIONS_SCHEMA,
    "confusion": CONFUSION_SCHEMA,
}
TABLE_SCHEMAS.update(SLIDE_LEVEL_SCHEMAS)

VIEW_SCHEMAS: dict[str, pa.Schema] = {"failures_view": FAILURES_VIEW_SCHEMA}


TABLE_PARTITIONS: dict[str, tuple[str, ...]] = {
    "failures": ("stage",),
    "ingested": (),
    "inferred": ("model_id",),
    "slides": ("model_id",),
    "regions": ("model_id",),
    "thresholds": ("model_id",),
    "cohort": ("model_id",),
    "qc": (),
    **{name: ("model_id",) for name in SLIDE_LEVEL_SCHEMAS},
    "explanations": ("model_id",),
    "confusion": ("model_id",),
}
"""Hive partition keys of each table (``<table>/<key>=<value>/part-*.parquet``).

A partition key lives in the directory name only, never inside the files, so any hive-aware
reader (``pd.read_parquet(dir)``, polars, DuckDB, ``pyarrow.dataset``) gets it exactly once.
"""


def file_schema(table_name: str) -> pa.Schema:
    """The schema of one part file: the table's schema without its partition keys."""
    schema = TABLE_SCHEMAS[table_name]
    for key in TABLE_PARTITIONS.get(table_name, ()):
        schema = schema.remove(schema.get_field_index(key))
    return schema


def schema_to_json(schema: pa.Schema, partitioned_by: tuple[str, ...] = ()) -> dict[str, Any]:
    """A stable JSON description of an Arrow schema (the checked-in contract)."""
    return {
        "partitioned_by": list(partitioned_by),
        "fields": [
            {
                "name": field.name,
                "type": str(field.type),
                "nullable": field.nullable,
                "description": (field.metadata or {}).get(b"description", b"").decode(),
                **({"labels": labels} if (labels := field_labels(field)) else {}),
            }
            for field in schema
        ],
    }
