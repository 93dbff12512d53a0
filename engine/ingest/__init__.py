"""Ingest: slide files → verified OME-Zarr stores with tissue and ground-truth labels.

Names are imported on first use, so ``import engine.ingest.pyramid`` (pure) pulls no Ray or zarr.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine._callable import lazy_callable_package

if TYPE_CHECKING:
    from engine.ingest.cohort import IngestReport, ingest
    from engine.ingest.convert import IngestResult, convert_slide
    from engine.ingest.params import IngestParams, TissueConfig

_EXPORTS = {
    "IngestParams": "engine.ingest.params",
    "IngestReport": "engine.ingest.cohort",
    "IngestResult": "engine.ingest.convert",
    "TissueConfig": "engine.ingest.params",
    "convert_slide": "engine.ingest.convert",
    "ingest": "engine.ingest.cohort",
}

__all__ = [
    "IngestParams",
    "IngestReport",
    "IngestResult",
    "TissueConfig",
    "convert_slide",
    "ingest",
]

lazy_callable_package(__name__, _EXPORTS, main="ingest")
