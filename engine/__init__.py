"""SlideFleet: distributed scoring of whole-slide-image cohorts.

The Python API is the product; the ``slidefleet`` CLI is a thin layer on it.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("slidefleet")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
