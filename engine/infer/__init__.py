"""Inference: Ray actors pinned to GPUs (CPU fallback) score tissue tiles from Zarr stores."""

from engine.infer.driver import InferReport, infer
from engine.infer.params import FusionConfig, InferParams

__all__ = ["FusionConfig", "InferParams", "InferReport", "infer"]

from engine._callable import make_module_callable  # noqa: E402

make_module_callable(__name__, infer)
