"""View parameters: how heatmaps, panels, GeoJSON and the cohort report are drawn."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ViewParams(BaseModel):
    """How ``render_views`` draws a model's results. Sizes in µm / µm², never pixels of a level.

    Display range of the heatmap, in order of precedence: ``value_range`` when given, else the
    ``clip_percentiles`` of the slide's tissue scores, else 0..1 for raw scores and -3..3 for
    z-scores.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_side_px: int = Field(
        1024,
        ge=64,
        le=8192,
        description="Longer side of thumbnails and heatmaps: the finest pyramid level that fits is read.",
    )
    channel: str | None = Field(
        None,
        description="Class (channel) shown in the heatmap; default: the model's positive class.",
    )
    zscore: bool = Field(
        False, description="Show per-slide z-scores over tissue instead of raw scores."
    )
    smooth_sigma_um: float = Field(
        0.0, ge=0, description="Gaussian smoothing of the score map (0: none)."
    )
    clip_percentiles: tuple[float, float] | None = Field(
        None,
        description="Clip the display range to these percentiles of tissue scores, e.g. [5, 95].",
    )
    value_range: tuple[float, float] | None = Field(
        None,
        description="Fixed display range [low, high] (overrides clip_percentiles).",
    )
    colormap: str = Field("viridis", description="Matplotlib colormap of the heatmap.")
    overlay_alpha: float = Field(
        0.6, ge=0, le=1, description="Opacity of the heatmap over the slide."
    )
    overlay_by_value: bool = Field(
        True,
        description="Over the slide, scale the heatmap's opacity by its value (low scores fade out).",
    )
    threshold: float | None = Field(
        None,
        description="Threshold for regions of slides the post tables have none for "
        "(compared with the scores named by threshold_score_kind). Post's own threshold wins.",
    )
    threshold_score_kind: Literal["probability", "zscore"] = Field(
        "probability",
        description="Scores that `threshold` applies to: 'probability' (raw) or 'zscore'.",
    )
    min_region_um2: float | None = Field(
        None,
        ge=0,
        description="Regions smaller than this are dropped before export; default: post's parameter, else 0.",
    )
    max_hole_um2: float | None = Field(
        None,
        ge=0,
        description="Holes up to this area are filled before export; default: post's parameter, else 0.",
    )
    simplify_um: float = Field(
        0.0, ge=0, description="Polygon simplification tolerance for GeoJSON (0: exact)."
    )
    region_class: str = Field(
        "Tumor", min_length=1, description="QuPath classification of exported regions."
    )
    report_panels: int = Field(
        3, ge=0, le=50, description="Best and worst slides (by IoU) shown with panels."
    )
    report_image_width_px: int = Field(
        1400,
        ge=200,
        le=8192,
        description="Panels are shrunk to this width inside report.html.",
    )
    workers: int = Field(4, ge=1, le=64, description="Slides rendered concurrently (threads).")
    gallery_tiles: int = Field(
        3,
        ge=0,
        le=20,
        description="Patch gallery per slide: this many top-scored tiles, worst false-positive "
        "tiles and worst false-negative tiles, each explained (Grad-CAM or input x gradient). "
        "0: no galleries or explanations.",
    )
    gallery_panel_px: int = Field(
        192, ge=64, le=1024, description="Side of each gallery panel (the tile is resized to it)."
    )
    explain_smooth_um: float = Field(
        4.0, ge=0, description="Gaussian smoothing of input x gradient maps (µm)."
    )

    @field_validator("colormap")
    @classmethod
    def _known_colormap(cls, value: str) -> str:
        import matplotlib

        if value not in matplotlib.colormaps:
            raise ValueError(
                f"unknown colormap {value!r}; use a matplotlib name such as 'viridis' or 'magma'"
            )
        return value

    @model_validator(mode="after")
    def _check_ranges(self) -> ViewParams:
        if self.clip_percentiles is not None:
            low, high = self.clip_percentiles
            if not 0 <= low < high <= 100:
                raise ValueError(
                    f"clip_percentiles must satisfy 0 <= low < high <= 100, got {self.clip_percentiles}"
                )
        if self.value_range is not None and not self.value_range[0] < self.value_range[1]:
            raise ValueError(
                f"value_range must be [low, high] with low < high, got {self.value_range}"
            )
        return self
