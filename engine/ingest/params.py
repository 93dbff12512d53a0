"""Ingest parameters: the typed config whose JSON Schema lives in ``schemas/ingest-params.schema.json``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.keys import content_hash
from engine.tissue import TissueParams


class TissueConfig(BaseModel):
    """Tissue detection (see :mod:`engine.tissue`); sizes in µm / µm²."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_mpp: float = Field(
        8.0, gt=0, description="Resolution (µm/px) at which tissue is detected."
    )
    min_saturation: float = Field(
        0.07, ge=0, le=1, description="Saturation floor under Otsu's threshold."
    )
    max_dark_value: float = Field(
        0.12,
        ge=0,
        le=1,
        description="Pixels darker than this (HSV value) are not tissue (ink, borders).",
    )
    closing_radius_um: float = Field(16.0, ge=0, description="Morphological closing radius.")
    min_tissue_um2: float = Field(
        20_000.0, ge=0, description="Tissue fragments smaller than this are removed."
    )
    max_hole_um2: float = Field(
        20_000.0, ge=0, description="Holes smaller than this inside tissue are filled."
    )
    min_tissue_fraction: float = Field(
        1e-4,
        ge=0,
        le=1,
        description="Below this fraction of the slide area the slide fails with NoTissue.",
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
    """How slides become OME-Zarr stores. Changing any field except ``block_px``, ``cpus_per_slide`` and
    ``verify_source_tiles`` (a check, not content: recorded per level) re-ingests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chunk_px: int = Field(
        512,
        ge=64,
        le=4096,
        description="Chunk side of the RGB pyramid arrays (measured: see README).",
    )
    zstd_level: int = Field(
        1, ge=1, le=22, description="Zstandard level of the lossless RGB chunks."
    )
    codec: Literal["zstd", "jpeg"] = Field(
        "zstd",
        description="RGB chunk codec: lossless zstd (default, level 0 byte-exact, readable by every zarr reader) or "
        "the compact 'jpeg' mode (one JPEG per chunk via the slidefleet.jpeg zarr codec, which readers need).",
    )
    source_tiles: bool = Field(
        True,
        description="Native levels the slide stores as JPEG tiles that OpenSlide decodes verbatim (Aperio SVS, "
        "generic tiled TIFF) keep those tiles byte for byte as their chunks: lossless with respect to the slide, "
        "no larger than the source, and nothing decoded or re-encoded (readers need the slidefleet.jpeg codec). "
        "false decodes them and stores the pixels with `codec`.",
    )
    verify_source_tiles: Literal["structure", "openslide"] = Field(
        "structure",
        description="How each copied source tile is checked. 'structure' (default, ~13 µs a tile, nothing "
        "decoded): its frame, markers and end-of-image; a damaged tile is read through OpenSlide and fails the "
        "slide with OpenSlide's reason. 'openslide': every copied tile is also decoded by OpenSlide and by the "
        "store's codec and must match pixel for pixel, so a tile OpenSlide refuses for damage that keeps the "
        "JPEG's structure fails the slide too (costs a full decode of the copied tiles; bytes unchanged).",
    )
    jpeg_quality: int = Field(
        90, ge=1, le=100, description="JPEG quality of the compact codec (4:4:4 chroma)."
    )
    block_px: int = Field(
        2048,
        ge=64,
        description="Side of the region read from OpenSlide at once (memory, not output).",
    )
    min_level_px: int = Field(
        512,
        ge=16,
        description="Pyramid levels are added (2x) until the longer side is at most this.",
    )
    annotation_mpp: float = Field(
        2.0, gt=0, description="Resolution (µm/px) of the rasterised ground-truth label."
    )
    class_map: str = Field(
        "camelyon16", description="Class-map preset that maps annotation classes to label values."
    )
    tissue: TissueConfig = Field(default_factory=TissueConfig)
    sparse: bool = Field(
        True,
        description="Convert the levels finer than the tissue-detection level only in the chunks that touch the "
        "tissue mask dilated by sparse_margin_um (unwritten chunks read as white glass); false writes every chunk.",
    )
    sparse_margin_um: float = Field(
        320.0,
        ge=0,
        description="Dilation of the tissue mask (µm) before choosing the chunks to convert. Must cover one model "
        "tile plus its overlap (a tile of 128 px at 2 µm/px is 256 µm); infer refuses models that need more.",
    )
    sparse_complete_um: float = Field(
        4.0,
        gt=0,
        description="Levels at least this coarse (µm/px), and the tissue-detection level, are written complete in "
        "sparse stores (thumbnails, views and QC read them).",
    )
    cpus_per_slide: int | None = Field(
        None,
        ge=1,
        description="Reader threads (and Ray CPUs) per slide; default: the cluster's CPUs shared among the slides "
        "to convert (execution only: not part of the store's key).",
    )

    @model_validator(mode="after")
    def _block_is_multiple_of_chunk(self) -> IngestParams:
        if self.block_px % self.chunk_px:
            raise ValueError(
                f"block_px ({self.block_px}) must be a multiple of chunk_px ({self.chunk_px})"
            )
        return self

    def output_hash(self) -> str:
        """Hash of everything that changes the store's content (``block_px``, ``cpus_per_slide`` and
        ``verify_source_tiles`` do not)."""
        payload = self.model_dump(exclude={"block_px", "cpus_per_slide", "verify_source_tiles"})
        if self.codec != "jpeg":
            payload.pop("jpeg_quality")  # no effect on a lossless store
        if not self.source_tiles:
            payload.pop("source_tiles")  # the stores made before the option existed: kept
        return content_hash(payload)
