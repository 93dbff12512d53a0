"""Import torchvision's pure-Python model definitions next to a CPU-only torch.

PyPI's torchvision 0.28.0 wheel (the release for torch 2.13.0) carries compiled detection ops
linked against CUDA torch; with the CPU build of torch 2.13.0 they do not load, and importing
torchvision then fails while it registers fake kernels for two of them (``nms``, ``qnms``).
Declaring those two operator schemas first lets the import go through; the backbones the tests
use (ResNet-18) need none of the compiled ops. With a CUDA torch nothing is changed.

torchvision comes with the ``test`` extras (the benchmarks and tests that use a ResNet-18).
"""

from __future__ import annotations

from types import ModuleType

import torch

_LIBRARY: torch.library.Library | None = None


def import_torchvision() -> ModuleType:
    global _LIBRARY
    try:
        import torchvision
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
        import sys

        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _LIBRARY = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            _LIBRARY.define(op + "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision
    return torchvision
