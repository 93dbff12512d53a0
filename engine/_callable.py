"""Let a stage's sub-package be called as its main function: ``engine.ingest(manifest, root)``.

The issues' Python API is ``engine.ingest(...)``, ``engine.infer(...)``, ``engine.post(...)`` while
``engine.ingest.IngestParams`` etc. stay importable; a module subclass with ``__call__`` gives both.

:func:`lazy_callable_package` does the same without importing anything up front: a stage's
names are imported on first use, so importing one of its pure-compute sub-modules
(``engine.post.compute``, ``engine.infer.plan``) does not pull Ray, Dask or zarr in through the
package's ``__init__``.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any


def make_module_callable(module_name: str, function: Callable[..., Any]) -> None:
    module = sys.modules[module_name]

    class _CallableModule(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return function(*args, **kwargs)

    _CallableModule.__call__.__doc__ = function.__doc__
    module.__class__ = _CallableModule


def lazy_callable_package(module_name: str, exports: Mapping[str, str], main: str) -> None:
    """Make package ``module_name`` export ``exports`` (name -> defining module) lazily.

    ``from package import name`` and ``package.name`` import the defining module on first use;
    calling the package calls ``exports[main]``.
    """
    module = sys.modules[module_name]

    def __getattr__(name: str) -> Any:  # PEP 562
        if name not in exports:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(module, name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*module.__dict__, *exports})

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    module.__dir__ = __dir__  # type: ignore[method-assign]

    class _CallableModule(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return getattr(self, main)(*args, **kwargs)

    _CallableModule.__call__.__doc__ = f"Call :func:`{exports[main]}.{main}`."
    module.__class__ = _CallableModule
