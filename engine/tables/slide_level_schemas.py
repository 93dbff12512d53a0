"""Arrow schemas of the slide-level tables: tiles, slide_predictions, slide_metrics, lesions, froc.

``tiles`` and ``slide_predictions`` carry one float32 column ``prob_<class>`` per class of the
model that wrote them; the declared schemas below are their fixed columns, and
:func:`with_class_columns` gives a part's full schema (the class columns follow the fixed ones,
in the model's class order).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa


def _field(name: str, type_: pa.DataType, description: str, *, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"description": description})


_PROVENANCE = [
    _field("run_id", pa.string(), "Run that wrote the row (runs/<run_id>.json)."),
    _field("engine_version", pa.string(), "SlideFleet version that wrote the row."),
    _field("written_at", pa.timestamp("ms", tz="UTC"), "When the row was written (UTC)."),
]

TILES_SCHEMA = pa.schema(
    [
        _field("slide_id", pa.string(), "Slide identifier."),
        _field(
            "model_id", pa.string(), "Patch classifier or embedding extractor that scored the tile."
        ),
        _field("row", pa.int32(), "Tile row on the model's tile grid."),
        _field("col", pa.int32(), "Tile column on the model's tile grid."),
        _field("x", pa.int64(), "Left edge of the tile, level-0 px."),
        _field("y", pa.int64(), "Top edge of the tile, level-0 px."),
        _field("width", pa.int64(), "Tile width, level-0 px (clipped at the slide's edge)."),
        _field("height", pa.int64(), "Tile height, level-0 px (clipped at the slide's edge)."),
        _field("tissue_fraction", pa.float32(), "Share of the tile on the tissue mask."),
        *_PROVENANCE,
    ]
)

SLIDE_PREDICTIONS_SCHEMA = pa.schema(
    [
        _field("slide_id", pa.string(), "Slide identifier."),
        _field("model_id", pa.string(), "MIL model that made the prediction."),
        _field(
            "split", pa.string(), "train / calibration / test, from the manifest.", nullable=True
        ),
        _field("true_label", pa.string(), "The manifest's label, if any.", nullable=True),
        _field("predicted_class", pa.string(), "Class of highest probability."),
        _field("score", pa.float32(), "Probability of the model's positive class (AUC uses it)."),
        _field(
            "attention_entropy",
            pa.float32(),
            "Normalised entropy of the attention in [0, 1]: 0 = one tile decides, 1 = uniform.",
        ),
        _field("bag_tiles", pa.int32(), "Tiles in the slide's bag."),
        _field(
            "top_tiles",
            pa.list_(
                pa.struct(
                    [
                        ("x", pa.int64()),
                        ("y", pa.int64()),
                        ("width", pa.int64()),
                        ("height", pa.int64()),
                        ("attention", pa.float32()),
                    ]
                )
            ),
            "Highest-attention tiles, level-0 px boxes, most attended first.",
        ),
        _field("attention_map", pa.string(), "NGFF attention map aligned with the slide."),
        *_PROVENANCE,
    ]
)

SLIDE_METRICS_SCHEMA = pa.schema(
    [
        _field(
            "source", pa.string(), "'mil' (MIL probabilities) or 'map_max' (a score map's maximum)."
        ),
        _field("model_id", pa.string(), "Model whose slide scores are evaluated."),
        _field("split", pa.string(), "Split evaluated: test, calibration, train or all."),
        _field(
            "statistic",
            pa.string(),
            "auc, accuracy, balanced_accuracy, quadratic_weighted_kappa or confusion.",
        ),
        _field(
            "value",
            pa.float64(),
            "The figure (a count for confusion); null when undefined.",
            nullable=True,
        ),
        _field("low", pa.float64(), "Lower bound of the bootstrap 95 % CI (auc).", nullable=True),
        _field("high", pa.float64(), "Upper bound of the bootstrap 95 % CI (auc).", nullable=True),
        _field("true_class", pa.string(), "Row of the confusion matrix.", nullable=True),
        _field("predicted_class", pa.string(), "Column of the confusion matrix.", nullable=True),
        _field("n_slides", pa.int64(), "Slides with a label that entered the figure."),
        _field(
            "resamples",
            pa.int64(),
            "Bootstrap resamples that held both classes (auc).",
            nullable=True,
        ),
        *_PROVENANCE,
    ]
)

LESIONS_SCHEMA = pa.schema(
    [
        _field("slide_id", pa.string(), "Slide identifier."),
        _field("model_id", pa.string(), "Model whose score map gave the detections."),
        _field("x", pa.float64(), "Detection point, level-0 px."),
        _field("y", pa.float64(), "Detection point, level-0 px."),
        _field("confidence", pa.float32(), "Score at the detection point."),
        _field(
            "outcome",
            pa.string(),
            "'tp' (first or best hit of a lesion), 'tp_repeat' (another hit of a lesion already "
            "hit), 'itc' (on an isolated-tumour-cell region: neither TP nor FP) or 'fp'.",
        ),
        _field("lesion", pa.int32(), "Evaluation lesion label hit (0: none).", nullable=True),
        *_PROVENANCE,
    ]
)

FROC_SCHEMA = pa.schema(
    [
        _field("model_id", pa.string(), "Model evaluated."),
        _field("split", pa.string(), "Split evaluated."),
        _field(
            "kind",
            pa.string(),
            "'curve' (a point of the FROC curve) or 'at_rate' (CAMELYON16's read-off).",
        ),
        _field("fp_per_slide", pa.float64(), "Mean false positives per slide."),
        _field("sensitivity", pa.float64(), "Lesion sensitivity."),
        _field(
            "threshold", pa.float64(), "Confidence threshold of the curve point.", nullable=True
        ),
        _field("score", pa.float64(), "FROC score: mean sensitivity at 1/4..8 FP per slide."),
        _field("n_slides", pa.int64(), "Slides evaluated."),
        _field("n_lesions", pa.int64(), "Non-ITC lesions in those slides."),
        *_PROVENANCE,
    ]
)

SLIDE_LEVEL_SCHEMAS: dict[str, pa.Schema] = {
    "tiles": TILES_SCHEMA,
    "slide_predictions": SLIDE_PREDICTIONS_SCHEMA,
    "slide_metrics": SLIDE_METRICS_SCHEMA,
    "lesions": LESIONS_SCHEMA,
    "froc": FROC_SCHEMA,
}


#: Prefixes of the columns a writer adds per model (one per class); readers give them back.
MODEL_COLUMN_PREFIXES: tuple[str, ...] = ("prob_",)


def class_column(class_name: str) -> str:
    return f"{MODEL_COLUMN_PREFIXES[0]}{class_name}"


def with_class_columns(schema: pa.Schema, class_names: Sequence[str]) -> pa.Schema:
    """``schema`` with one float32 ``prob_<class>`` column per class, before the provenance."""
    fixed = [f for f in schema if f.name not in {"run_id", "engine_version", "written_at"}]
    extra = [
        _field(class_column(c), pa.float32(), f"Probability of class {c!r}.") for c in class_names
    ]
    provenance = [f for f in schema if f.name in {"run_id", "engine_version", "written_at"}]
    return pa.schema([*fixed, *extra, *provenance])
