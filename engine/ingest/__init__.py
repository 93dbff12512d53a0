"""Ingest: slide files → verified OME-Zarr stores with tissue and ground-truth labels."""

from engine.ingest.cohort import IngestReport, ingest
from engine.ingest.convert import IngestResult, convert_slide
from engine.ingest.params import IngestParams, TissueConfig

__all__ = ["IngestParams", "IngestReport", "IngestResult", "TissueConfig", "convert_slide", "ingest"]

from engine._callable import make_module_callable  # noqa: E402

make_module_callable(__name__, ingest)
