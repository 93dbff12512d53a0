"""Let a stage's sub-package be called as its main function: ``engine.ingest(manifest, root)``.

The issues' Python API is ``engine.ingest(...)``, ``engine.infer(...)``, ``engine.post(...)`` while
``engine.ingest.IngestParams`` etc. stay importable; a module subclass with ``__call__`` gives both.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any


def make_module_callable(module_name: str, function: Callable[..., Any]) -> None:
    module = sys.modules[module_name]

    class _CallableModule(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return function(*args, **kwargs)

    _CallableModule.__call__.__doc__ = function.__doc__
    module.__class__ = _CallableModule
