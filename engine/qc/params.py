"""QC settings: the resolution slides are judged at, the measures' limits, and the gate."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.qc.slide_quality import QualityParams

QcFlag = Literal[
    "blur",
    "pen",
    "debris",
    "overexposed",
    "little_tissue",
    "brightness",
    "contrast",
    "stain",
    "annotation_density",
    "annotation_size",
    "degenerate_annotation",
    "annotation_outside_slide",
    "annotation_off_tissue",
]


class QcParams(BaseModel):
    """How ``slidefleet qc`` (and the QC stage of ``run``) judges slides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        True,
        description="Run QC as a stage of `slidefleet run`, after ingest and before infer "
        "(`slidefleet qc` always runs it).",
    )

    pixel_um: float = Field(
        4.0,
        gt=0,
        description="Resolution (µm/px) every slide is judged at: the finest stored level not "
        "coarser than this is read, so figures compare across the cohort.",
    )
    blur_tile_um: float = Field(
        128.0, gt=0, description="Side of the tiles blur is measured on (µm)."
    )
    blur_threshold: float = Field(
        2e-4, ge=0, description="Laplacian variance below which a tissue tile counts as blurred."
    )
    z_limit: float = Field(3.5, gt=0, description="Robust z-score beyond which a slide is flagged.")
    exclude: tuple[QcFlag, ...] = Field(
        (),
        description="Flags that keep a slide out of inference (a failures row says why), "
        "e.g. [blur, pen]. Empty: QC reports, never gates.",
    )

    @model_validator(mode="after")
    def _gate_needs_the_stage(self) -> QcParams:
        if self.exclude and not self.enabled:
            raise ValueError(
                f"qc.exclude {list(self.exclude)} needs QC to run: set qc.enabled to true, or "
                "empty qc.exclude"
            )
        return self

    def quality_params(self) -> QualityParams:
        return QualityParams(blur_tile_um=self.blur_tile_um, blur_threshold=self.blur_threshold)
