"""Pyramid planning and downsampling: pure functions on shapes and arrays."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from engine.slides.base import SlideInfo


@dataclass(frozen=True)
class LevelPlan:
    """One level of the output pyramid.

    ``native_level`` is the OpenSlide level copied verbatim, or ``None`` for a level computed by
    2x2 area averaging of the previous output level. ``downsample_x/y`` are relative to level 0.
    """

    index: int
    width_px: int
    height_px: int
    downsample_x: float
    downsample_y: float
    native_level: int | None


def plan_levels(info: SlideInfo, min_level_px: int) -> list[LevelPlan]:
    """Native levels first (their real, possibly non-power-of-two downsamples), then 2x levels."""
    levels: list[LevelPlan] = []
    for level, (width_px, height_px) in enumerate(info.level_dimensions_px):
        levels.append(
            LevelPlan(
                index=level,
                width_px=width_px,
                height_px=height_px,
                downsample_x=info.width_px / width_px,
                downsample_y=info.height_px / height_px,
                native_level=level,
            )
        )
    while max(levels[-1].width_px, levels[-1].height_px) > min_level_px:
        last = levels[-1]
        levels.append(
            LevelPlan(
                index=last.index + 1,
                width_px=math.ceil(last.width_px / 2),
                height_px=math.ceil(last.height_px / 2),
                downsample_x=last.downsample_x * 2,
                downsample_y=last.downsample_y * 2,
                native_level=None,
            )
        )
    return levels


def downsample_area_2x(block: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """2x2 mean of a (C, H, W) uint8 block; odd edges are padded by replication."""
    _, height, width = block.shape
    pad_y, pad_x = height % 2, width % 2
    if pad_y or pad_x:
        block = np.pad(block, ((0, 0), (0, pad_y), (0, pad_x)), mode="edge")
    summed = (
        block[:, 0::2, 0::2].astype(np.uint16)
        + block[:, 1::2, 0::2]
        + block[:, 0::2, 1::2]
        + block[:, 1::2, 1::2]
    )
    return ((summed + 2) // 4).astype(np.uint8)


def downsample_nearest_2x(labels: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Nearest-neighbour 2x downsample of a (H, W) label block (labels must not be averaged)."""
    return np.ascontiguousarray(labels[0::2, 0::2])


def block_origins(length_px: int, block_px: int) -> range:
    return range(0, length_px, block_px)
