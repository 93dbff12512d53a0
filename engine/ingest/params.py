"""Ingest parameters: the typed config whose JSON Schema lives in ``schemas/ingest-params.schema.json``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.store.keys import content_hash
from engine.tissue import TissueParams


class TissueConfig(BaseModel):
    """Tissue detection (see :mod:`engine.tissue`); sizes in µm / µm²."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_mpp: float = Field(8.0, gt=0, description="Resolution (µm/px) at which tissue is detected.")
    min_saturation: float = Field(0.07, ge=0, le=1, description="Saturation floor under Otsu's threshold.")
    max_dark_value: float = Field(0.12, ge=0, le=1, description="Pixels darker than this (HSV value) are not tissue (ink, borders).")
    closing_radius_um: float = Field(16.0, ge=0, description="Morphological closing radius.")
    min_tissue_um2: float = Field(20_000.0, ge=0, description="Tissue fragments smaller than this are removed.")
    max_hole_um2: float = Field(20_000.0, ge=0, description="Holes smaller than this inside tissue are filled.")
    min_tissue_fraction: float = Field(
        1e-4, ge=0, le=1, description="Below this fraction of the slide area the slide fails with NoTissue."
    )

    def to_params(self) -> TissueParams:
        return TissueParams(
            target_mpp=self.target_mpp,
            min_saturation=self.min_saturation,
            max_dark_value=self.max_dark_value,
            closing_radius_um=self.closing_radius_um,
            min_tissue_um2=self.min_tissue_um2,
            max_hole_um2=self.max_hole_um2,
        )


class IngestParams(BaseModel):
    """How slides become OME-Zarr stores. Changing any field except ``block_px`` re-ingests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chunk_px: int = Field(512, ge=64, le=4096, description="Chunk side of the RGB pyramid arrays (measured: see README).")
    zstd_level: int = Field(1, ge=1, le=22, description="Zstandard level of the lossless RGB chunks.")
    block_px: int = Field(2048, ge=64, description="Side of the region read from OpenSlide at once (memory, not output).")
    min_level_px: int = Field(512, ge=16, description="Pyramid levels are added (2x) until the longer side is at most this.")
    annotation_mpp: float = Field(2.0, gt=0, description="Resolution (µm/px) of the rasterised ground-truth label.")
    class_map: str = Field("camelyon16", description="Class-map preset that maps annotation classes to label values.")
    tissue: TissueConfig = Field(default_factory=TissueConfig)

    @model_validator(mode="after")
    def _block_is_multiple_of_chunk(self) -> IngestParams:
        if self.block_px % self.chunk_px:
            raise ValueError(f"block_px ({self.block_px}) must be a multiple of chunk_px ({self.chunk_px})")
        return self

    def output_hash(self) -> str:
        """Hash of everything that changes the store's content (``block_px`` does not)."""
        payload = self.model_dump(exclude={"block_px"})
        return content_hash(payload)
