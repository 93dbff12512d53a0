"""One error hierarchy for SlideFleet.

Every slide-level failure is an instance of :class:`SlideFleetError`; the failures table records the
class name and the message, so messages are written for the person who has to fix the input.
Each leaf also subclasses the built-in a caller would naturally catch (``ValueError``,
``FileNotFoundError``...).
"""

from __future__ import annotations


class SlideFleetError(Exception):
    """Base of every error SlideFleet raises on purpose."""


class ManifestError(SlideFleetError, ValueError):
    """The manifest itself is malformed (missing columns, unreadable file)."""


class ConfigError(SlideFleetError, ValueError):
    """A configuration file or option is invalid; the message names the bad field."""


class InvalidSlideId(SlideFleetError, ValueError):
    """A slide ID is empty, duplicated, or would become a path outside the output root."""


class SlideUnreadable(SlideFleetError, OSError):
    """OpenSlide cannot open the file, or a region of it cannot be decoded."""


class SlideNotFound(SlideUnreadable, FileNotFoundError):
    """The slide file named in the manifest does not exist."""


class NotARegularFile(SlideUnreadable):
    """The manifest names a folder, device, pipe, socket or symlink loop instead of a file."""


class InputTooLarge(SlideUnreadable):
    """A slide or annotation file is larger than any real one: refused before it is read."""


class SourceTileMismatch(SlideFleetError, ValueError):
    """A slide's JPEG tile decodes differently from what OpenSlide reads, so it cannot be stored
    as it is (``ingest.source_tiles``)."""


class MissingMpp(SlideFleetError, ValueError):
    """The slide has no trustworthy microns-per-pixel and the manifest gives no override."""


class NoTissue(SlideFleetError, ValueError):
    """Tissue detection found no tissue on the slide."""


class BadAnnotation(SlideFleetError, ValueError):
    """An annotation file is unreadable, malformed, or lies outside the slide."""


class StoreIncomplete(SlideFleetError, FileNotFoundError):
    """A Zarr store exists but has no completion record: it was left half-written."""


class ModelError(SlideFleetError, ValueError):
    """A model file or model card is invalid or cannot be loaded safely."""


class ModelOutputInvalid(SlideFleetError, ValueError):
    """A model produced NaN/inf values or an output of the wrong shape."""


class OutputWriteError(SlideFleetError, OSError):
    """An output (a table, a report, a run record) could not be written, e.g. the disk is full.

    Not a slide's fault: the run stops cleanly, what was committed stays valid, and a rerun after
    freeing space redoes only what is missing.
    """


class WorkerDied(SlideFleetError, RuntimeError):
    """A Ray worker died and its retries were exhausted."""


class UnmaterialisedRegion(SlideFleetError, ValueError):
    """A tile needs pixels that a sparse slide store did not convert (its margin is too small)."""


class DeviceUnavailable(SlideFleetError, RuntimeError):
    """``infer.device: gpu`` on a cluster that has no GPU and whose autoscaler cannot add one."""


class PlacementTimeout(SlideFleetError, TimeoutError):
    """No scoring actor could be placed in time; the message names the resources that were missing."""
