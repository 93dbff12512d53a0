"""Post-processing parameters (JSON Schema: ``schemas/post-params.schema.json``).

Everything that changes the tables is hashed into ``params_hash`` (:meth:`PostParams.output_hash`);
how the work is scheduled (:class:`PostExecution`) is not, so moving from a laptop to a cluster
does not make outputs stale.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.keys import content_hash
from engine.post.compute import OBJECTIVES, Objective, default_grid

ScoreKind = Literal["probability", "zscore"]
Scheduler = Literal["auto", "processes", "threads", "ray", "sync"]


class PostExecution(BaseModel):
    """Where the per-slide tasks run; not part of ``params_hash``.

    ``ray`` runs the Dask graphs on the Ray cluster (Dask-on-Ray); ``processes`` starts a local
    ``dask.distributed`` cluster of single-threaded worker processes; ``threads`` the same with
    threads in one process (GIL-bound); ``sync`` runs in this process. ``auto`` (default) is
    ``ray`` when this process is already connected to Ray or ``RAY_ADDRESS`` is set (as in
    ``slidefleet run``: no second cluster, and every node of the Ray cluster), else ``sync`` below
    32 slides and ``processes`` above (a local cluster starts in ~3 s, a Ray in 7-19 s; README
    has the figures).
    A ``dask_address`` given to :func:`engine.post.cohort.post` overrides all of these and joins
    that Dask scheduler.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheduler: Scheduler = Field(
        "auto", description="auto, ray, processes, threads or sync (see above)."
    )
    n_workers: int | None = Field(
        None, ge=1, description="Local workers (default: one per CPU core)."
    )
    memory_limit: str = Field(
        "auto", description="Per-worker memory limit of a local cluster, e.g. '2GiB'."
    )


class PostParams(BaseModel):
    """How score maps become masks, regions, quantities and metrics; areas in µm²."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    score: ScoreKind = Field(
        "probability",
        description="Scores thresholded: 'probability' (the model's score as is) or 'zscore' "
        "(per slide, mean and std over tissue).",
    )
    objective: Objective = Field(
        "iou", description="Objective of the threshold that is applied: iou, f1 or youden."
    )
    grid: tuple[float, ...] | None = Field(
        None,
        description="Threshold grid, strictly increasing. Default: 0..1 step 0.01 for "
        "probabilities, -4..8 step 0.05 for z-scores.",
    )
    calibration_split: str = Field(
        "calibration",
        description="Manifest split the threshold is fitted on (and only that split).",
    )
    fallback_threshold: float | None = Field(
        None,
        description="Threshold used when none can be fitted (no calibration slide with tumour). "
        "Null: no slide is thresholded, and the run records a ThresholdFitError failure.",
    )
    positive_class: str | None = Field(
        None, description="Model class thresholded as tumour (default: the model card's)."
    )
    truth_labels: tuple[int, ...] | None = Field(
        None,
        description="Annotation label values that count as tumour (default: every non-zero label).",
    )
    class_label_values: tuple[int, ...] | None = Field(
        None,
        description="Multi-class models: the annotation label value of each model class, in "
        "class order (default: class i is label i). Pixels with other labels are not scored.",
    )
    min_region_um2: float = Field(
        500.0, ge=0, description="Predicted regions smaller than this are removed (µm²)."
    )
    max_hole_um2: float = Field(
        1_000.0,
        ge=0,
        description="Holes up to this size inside predicted regions are filled (µm²).",
    )
    patch_um: float = Field(256.0, gt=0, description="Side of the patches of the patch AUC (µm).")
    patch_positive_fraction: float | None = Field(
        None,
        gt=0,
        le=1,
        description="A patch is tumour if this share of its pixels is (null: any tumour pixel).",
    )
    oracle: bool = Field(
        True, description="Report per-slide oracle thresholds (columns named oracle_*)."
    )
    execution: PostExecution = Field(default_factory=PostExecution)

    @field_validator("grid")
    @classmethod
    def _check_grid(cls, grid: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if grid is None:
            return None
        if not grid or not all(math.isfinite(g) for g in grid):
            raise ValueError("grid must be a non-empty list of finite numbers")
        if any(b <= a for a, b in zip(grid, grid[1:], strict=False)):
            raise ValueError("grid must be strictly increasing")
        return grid

    @model_validator(mode="after")
    def _check_objective(self) -> PostParams:
        if self.objective not in OBJECTIVES:  # pragma: no cover - Literal already checks
            raise ValueError(f"objective must be one of {OBJECTIVES}")
        return self

    def threshold_grid(self) -> NDArray[np.float64]:
        """The grid of the sweep and of the oracle thresholds."""
        if self.grid is not None:
            return np.asarray(self.grid, dtype=np.float64)
        return default_grid(self.score)

    def output_hash(self) -> str:
        """``params_hash``: every field that changes a table, not how the work is scheduled."""
        payload = self.model_dump(mode="json", exclude={"execution"})
        return content_hash(payload)
