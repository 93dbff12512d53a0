"""What a slide reader is: geometry, physical scale and region reads."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from engine.errors import MissingMpp

# Microscope slides are scanned between ~0.1 µm/px (100x oil) and ~10 µm/px (low-power overviews).
# A value outside this range is a file-format default (72 dpi → 352.8 µm/px), not a microscope.
MPP_PLAUSIBLE_RANGE_UM = (0.05, 20.0)


@dataclass(frozen=True)
class SlideInfo:
    """Geometry and provenance of an opened slide.

    ``level_dimensions_px`` are (width, height) per native pyramid level; ``level_downsamples``
    are OpenSlide's (possibly non-power-of-two) downsample factors relative to level 0.
    """

    path: str
    vendor: str
    width_px: int
    height_px: int
    mpp_x: float
    mpp_y: float
    mpp_source: str  # "slide" or "manifest"
    level_dimensions_px: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    objective_power: float | None

    @property
    def mpp(self) -> float:
        """Mean microns per pixel at level 0."""
        return (self.mpp_x + self.mpp_y) / 2.0

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions_px)

    def best_level_for_downsample(self, downsample: float) -> int:
        """Highest-resolution native level whose downsample does not exceed ``downsample``."""
        best = 0
        for level, level_ds in enumerate(self.level_downsamples):
            if level_ds <= downsample * (1 + 1e-6):
                best = level
        return best


class SlideReader(Protocol):
    """A slide opened for reading; implementations wrap one library each."""

    info: SlideInfo

    def read_region_rgb(
        self, x_level0_px: int, y_level0_px: int, level: int, width_px: int, height_px: int
    ) -> NDArray[np.uint8]:
        """RGB (height, width, 3) uint8 pixels of ``level``, origin in level-0 pixels."""
        ...

    def read_region_planar(
        self, x_level0_px: int, y_level0_px: int, level: int, width_px: int, height_px: int
    ) -> NDArray[np.uint8]:
        """The same pixels as :meth:`read_region_rgb`, planar: (3, height, width) uint8."""
        ...

    def close(self) -> None: ...


def check_mpp(
    mpp_x: float | None, mpp_y: float | None, *, override: float | None, path: str
) -> tuple[float, float, str]:
    """Return a trustworthy (mpp_x, mpp_y, source), or raise :class:`MissingMpp`.

    A manifest override always wins (it is the user's explicit statement). Otherwise the slide's
    own value must exist, be finite, be plausible for a microscope, and be nearly isotropic.
    """
    low, high = MPP_PLAUSIBLE_RANGE_UM
    if override is not None:
        if not (math.isfinite(override) and low <= override <= high):
            raise MissingMpp(
                f"{path}: the manifest's mpp override {override!r} µm/px is outside the plausible "
                f"range {low}–{high} µm/px for a microscope slide."
            )
        return float(override), float(override), "manifest"
    if mpp_x is None or mpp_y is None:
        raise MissingMpp(
            f"{path}: the slide records no microns-per-pixel. Add an 'mpp' value for this slide "
            "to the manifest (e.g. 0.25 for 40x, 0.5 for 20x scans)."
        )
    for value in (mpp_x, mpp_y):
        if not (math.isfinite(value) and low <= value <= high):
            raise MissingMpp(
                f"{path}: the slide's microns-per-pixel ({mpp_x:.4g} x {mpp_y:.4g} µm/px) is not a "
                f"plausible microscope resolution (expected {low}–{high} µm/px); it is probably a "
                "file-format default such as 72 dpi. Add the true 'mpp' to the manifest."
            )
    if abs(mpp_x - mpp_y) / max(mpp_x, mpp_y) > 0.05:
        raise MissingMpp(
            f"{path}: pixels are not square (mpp-x {mpp_x:.4g} vs mpp-y {mpp_y:.4g} µm/px). "
            "SlideFleet needs near-square pixels; give an explicit 'mpp' in the manifest if the "
            "metadata is wrong."
        )
    return float(mpp_x), float(mpp_y), "slide"
