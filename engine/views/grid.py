"""Pixel grids in the slide's physical frame, level choice, and resampling between grids.

Every stored level (slide image, labels, score maps) carries its own scale and translation in µm:
pixel ``(r, c)`` has its centre at ``(translation_y + r * scale_y, translation_x + c * scale_x)``.
Grids are mapped onto each other through that frame, never by assuming equal shapes or a
power-of-two relation. Level-0 pixel ``k`` of the slide has its centre at ``t0 + k * mpp`` µm
(``t0``: level 0's translation, normally 0), so in level-0 pixel coordinates (pixel ``k`` spans
``[k, k + 1)``) a point at ``u`` µm lies at ``(u - t0) / mpp + 0.5``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray


class LevelLike(Protocol):
    """What a level needs to be placed: shape and physical scale / offset (µm)."""

    @property
    def height_px(self) -> int: ...
    @property
    def width_px(self) -> int: ...
    @property
    def scale_y_um(self) -> float: ...
    @property
    def scale_x_um(self) -> float: ...
    @property
    def translation_y_um(self) -> float: ...
    @property
    def translation_x_um(self) -> float: ...


L = TypeVar("L", bound=LevelLike)


@dataclass(frozen=True)
class PixelGrid:
    """A regular grid of ``height_px x width_px`` pixels placed in µm (pixel centres)."""

    height_px: int
    width_px: int
    scale_y_um: float
    scale_x_um: float
    translation_y_um: float = 0.0
    translation_x_um: float = 0.0

    def __post_init__(self) -> None:
        if self.height_px < 0 or self.width_px < 0:
            raise ValueError(f"grid shape must be >= 0, got {self.height_px} x {self.width_px}")
        if not (self.scale_y_um > 0 and self.scale_x_um > 0):
            raise ValueError(
                f"grid scale must be positive, got {self.scale_y_um}, {self.scale_x_um}"
            )

    @classmethod
    def of(cls, level: LevelLike) -> PixelGrid:
        return cls(
            int(level.height_px),
            int(level.width_px),
            float(level.scale_y_um),
            float(level.scale_x_um),
            float(level.translation_y_um),
            float(level.translation_x_um),
        )

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height_px, self.width_px)

    @property
    def pixel_um(self) -> float:
        """Pixel side in µm: the geometric mean of x and y (post measures areas with it too)."""
        return math.sqrt(self.scale_x_um * self.scale_y_um)

    def level0_placement(
        self,
        mpp_x: float,
        mpp_y: float,
        *,
        level0_translation_x_um: float = 0.0,
        level0_translation_y_um: float = 0.0,
    ) -> dict[str, float]:
        """Keyword arguments placing this grid in level-0 pixels, as
        :func:`engine.post.compute.region_polygons` takes them (top-left corner, pixel size)."""
        return {
            "origin_x_level0_px": (
                self.translation_x_um - self.scale_x_um / 2 - level0_translation_x_um
            )
            / mpp_x
            + 0.5,
            "origin_y_level0_px": (
                self.translation_y_um - self.scale_y_um / 2 - level0_translation_y_um
            )
            / mpp_y
            + 0.5,
            "level0_px_per_pixel_x": self.scale_x_um / mpp_x,
            "level0_px_per_pixel_y": self.scale_y_um / mpp_y,
        }


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


def _nearest_index(
    n_dst: int, dst_t: float, dst_s: float, src_t: float, src_s: float, n_src: int
) -> NDArray[np.int64]:
    """Source index of the pixel whose centre is nearest each destination centre; -1 outside."""
    centres = dst_t + np.arange(n_dst, dtype=np.float64) * dst_s
    index = np.floor((centres - src_t) / src_s + 0.5).astype(np.int64)
    index[(index < 0) | (index >= n_src)] = -1
    return index


def sample_nearest(
    source: NDArray[np.generic],
    source_grid: PixelGrid,
    target_grid: PixelGrid,
    *,
    fill: float | int = 0,
) -> NDArray[np.generic]:
    """Resample ``source`` (``(H, W)`` or ``(C, H, W)`` on ``source_grid``) onto ``target_grid``.

    Each target pixel takes the source pixel whose centre is nearest its own centre; target
    pixels outside the source get ``fill``. Labels stay labels (no averaging).
    """
    src = np.asarray(source)
    if src.shape[-2:] != source_grid.shape:
        raise ValueError(f"source has shape {src.shape}, its grid {source_grid.shape}")
    rows = _nearest_index(
        target_grid.height_px,
        target_grid.translation_y_um,
        target_grid.scale_y_um,
        source_grid.translation_y_um,
        source_grid.scale_y_um,
        source_grid.height_px,
    )
    cols = _nearest_index(
        target_grid.width_px,
        target_grid.translation_x_um,
        target_grid.scale_x_um,
        source_grid.translation_x_um,
        source_grid.scale_x_um,
        source_grid.width_px,
    )
    out = src[..., np.clip(rows, 0, None)[:, None], np.clip(cols, 0, None)[None, :]]
    outside = (rows < 0)[:, None] | (cols < 0)[None, :]
    if outside.any():
        if isinstance(fill, float) and not np.issubdtype(out.dtype, np.floating):
            out = out.astype(np.float32)
        out[..., outside] = fill  # fancy indexing made a copy: the source is untouched
    return out
