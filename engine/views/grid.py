"""Which stored level a view reads: by size (thumbnails) or by pixel size (score maps, labels).

Levels are :class:`engine.store.frame.Frame` s; resampling between them is
:func:`engine.store.frame.resample_nearest` (the one nearest-centre resampler).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from engine.store.frame import Frame

L = TypeVar("L", bound=Frame)


def level_for_size(levels: Sequence[L], max_side_px: int) -> L:
    """The finest level whose longer side is at most ``max_side_px`` (else the coarsest).

    Thumbnails are read through this, so a large slide's level 0 is never read for a picture.
    """
    if not levels:
        raise ValueError("no levels to choose from")
    by_size = sorted(levels, key=lambda lv: lv.height_px * lv.width_px, reverse=True)
    for level in by_size:
        if max(level.height_px, level.width_px) <= max_side_px:
            return level
    return by_size[-1]


def level_for_scale(levels: Sequence[L], target_um: float) -> L:
    """The coarsest level whose pixels are at most ``target_um`` wide (else the finest)."""
    if not levels:
        raise ValueError("no levels to choose from")
    by_scale = sorted(levels, key=lambda lv: max(lv.scale_x_um, lv.scale_y_um))
    chosen = by_scale[0]
    for level in by_scale:
        if max(level.scale_x_um, level.scale_y_um) <= target_um * 1.01:
            chosen = level
    return chosen
