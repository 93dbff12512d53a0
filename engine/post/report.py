"""What one ``post`` run produced: :class:`PostReport` (tables, failures, the fitted threshold)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from engine.post.params import PostParams
from engine.tables import FailureRecord

if TYPE_CHECKING:
    from engine.models import RegisteredModel

RESULT_TABLES = ("slides", "regions", "thresholds", "cohort")
COHORT_SLIDE_ID = "*"
"""``slide_id`` of a failure that concerns the whole cohort (no threshold could be fitted)."""


@dataclass
class PostReport:
    """Outcome of one post run: the tables as Arrow tables, and the failures."""

    run_id: str
    model: RegisteredModel
    params: PostParams
    params_hash: str
    tables: dict[str, pa.Table]
    failures: list[FailureRecord] = field(default_factory=list)
    threshold: float | None = None
    """Threshold applied to every slide (``None``: none could be fitted and no fallback)."""
    threshold_objective: str | None = None
    fitted_thresholds: dict[str, float] = field(default_factory=dict)
    """Threshold fitted on the calibration split for each objective that has one."""
    calibration_slide_ids: list[str] = field(default_factory=list)
    """Slides whose sweep counts the fit summed."""
    threshold_source: dict[str, Any] | None = None
    """Where the applied threshold came from: this cohort's fit, a fit stored with the model
    version, ``post.fallback_threshold`` or the model card (see :mod:`engine.post.threshold_store`)."""
    reused: bool = False
    """True when an up-to-date run's tables were read back instead of recomputed."""
    scheduler: str = ""
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    record_path: Path | None = None

    @property
    def slides(self) -> pa.Table:
        return self.tables["slides"]

    @property
    def regions(self) -> pa.Table:
        return self.tables["regions"]

    @property
    def thresholds(self) -> pa.Table:
        return self.tables["thresholds"]

    @property
    def cohort(self) -> pa.Table:
        return self.tables["cohort"]


__all__ = ["COHORT_SLIDE_ID", "RESULT_TABLES", "PostReport"]
