"""SlideFleet: distributed scoring of whole-slide-image cohorts.

The Python API is the product; the ``slidefleet`` CLI is a thin layer on it::

    import engine
    engine.ingest("cohort/manifest.csv", "fleet")        # slides -> OME-Zarr
    engine.infer("fleet", "demo-unet-tumour")            # Ray actors -> score maps
    engine.post("fleet", "demo-unet-tumour")             # Dask -> Parquet tables
    tables = engine.score_cohort("cohort/manifest.csv", "demo-unet-tumour", root="fleet")

Stages are imported on first use, so ``import engine`` stays light.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("slidefleet")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

_LAZY = {
    "ingest": "engine.ingest",
    "infer": "engine.infer",
    "post": "engine.post",
    "views": "engine.views",
    "score_cohort": "engine.operate",
    "reprocess": "engine.operate",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    return getattr(module, name) if _LAZY[name] == "engine.operate" else module
