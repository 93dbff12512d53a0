"""Pure compute of cohort post-processing: arrays in, arrays and dataclasses out.

No Ray, Dask or zarr here; the orchestration layer maps these over slides. Per slide:
``zscore_over_tissue`` -> ``apply_threshold`` (threshold from ``fit_threshold`` on the
calibration split's summed ``SweepCounts``) -> ``clean_mask`` -> ``regions`` /
``region_polygons`` -> ``quantify``.
"""

from engine.post.compute.components import (
    Region,
    label_regions,
    region_outlines,
    region_polygons,
    regions,
    signed_area,
)
from engine.post.compute.mask import predicted_mask
from engine.post.compute.morphology import clean_mask
from engine.post.compute.normalise import zscore_over_tissue
from engine.post.compute.quantify import SlideQuantities, quantify
from engine.post.compute.thresholds import (
    OBJECTIVES,
    Objective,
    SweepCounts,
    ThresholdFitError,
    apply_threshold,
    default_grid,
    fit_threshold,
    objective_curve,
    oracle_columns,
    oracle_threshold,
    sweep_table,
)

__all__ = [
    "OBJECTIVES",
    "Objective",
    "Region",
    "SlideQuantities",
    "SweepCounts",
    "ThresholdFitError",
    "apply_threshold",
    "clean_mask",
    "default_grid",
    "fit_threshold",
    "label_regions",
    "objective_curve",
    "oracle_columns",
    "predicted_mask",
    "signed_area",
    "oracle_threshold",
    "quantify",
    "region_outlines",
    "region_polygons",
    "regions",
    "sweep_table",
    "zscore_over_tissue",
]
