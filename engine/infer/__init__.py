"""Inference: Ray actors pinned to GPUs (CPU fallback) score tissue tiles from Zarr stores.

Names are imported on first use, so ``import engine.infer.plan`` (pure geometry) pulls no Ray,
torch or zarr.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine._callable import lazy_callable_package

if TYPE_CHECKING:
    from engine.infer.driver import InferReport, infer
    from engine.infer.params import FusionConfig, InferParams

_EXPORTS = {
    "FusionConfig": "engine.infer.params",
    "InferParams": "engine.infer.params",
    "InferReport": "engine.infer.driver",
    "infer": "engine.infer.driver",
}

__all__ = ["FusionConfig", "InferParams", "InferReport", "infer"]

lazy_callable_package(__name__, _EXPORTS, main="infer")
