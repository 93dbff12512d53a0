"""Parameters of map evaluation: the job config's ``evaluate`` section."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class MapEvalParams(BaseModel):
    """Parameters of map evaluation."""

    model_config = ConfigDict(extra="forbid")

    positive_label: str = Field("tumor", description="Manifest label of a positive slide.")
    detection_threshold: float = Field(
        0.5, description="Map score at or above which a region is a detection."
    )
    froc_mode: Literal["challenge", "all_detections"] = Field(
        "challenge",
        description="challenge: the CAMELYON16 script's sweep (its lowest threshold is skipped); "
        "all_detections: every detection counts.",
    )
    truth_labels: tuple[int, ...] | None = Field(
        None, description="Annotation label values that are tumour (default: any non-zero)."
    )
    splits: list[str] | None = Field(None, description="Only these splits (default: every slide).")
    bootstrap_resamples: int = Field(2000, ge=0)
    seed: int = 0
    slides_per_task: int = Field(8, ge=1)
