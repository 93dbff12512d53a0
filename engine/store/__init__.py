"""Zarr/NGFF stores: metadata builders, array creation, atomic commit and completion records."""

from engine.store import jpeg_codec as _jpeg_codec  # noqa: F401  (registers the slidefleet.jpeg codec)
from engine.store.atomic import atomic_directory, remove_stale_temporaries
from engine.store.completion import COMPLETION_FILE, read_completion, write_completion
from engine.store.layout import FleetLayout

__all__ = [
    "COMPLETION_FILE",
    "FleetLayout",
    "atomic_directory",
    "read_completion",
    "remove_stale_temporaries",
    "write_completion",
]
