"""Tile embeddings: features stores written by embedding extractors, and per-tile geometry.

Names are exported lazily, so ``engine.features.tiles`` (pure compute) imports no zarr.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "FEATURES_FORMAT_VERSION": "engine.features.store",
    "SlideFeatures": "engine.features.store",
    "features_key": "engine.features.store",
    "read_features": "engine.features.store",
    "tile_boxes_level0": "engine.features.tiles",
    "tile_tissue_fraction": "engine.features.tiles",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'engine.features' has no attribute {name!r}")
