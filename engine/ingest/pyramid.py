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


def centre_sample_indices(
    n_out: int, factor: int, n_in: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Input pixels nearest the centres of ``n_out`` output pixels that each span ``factor`` inputs.

    Output pixel ``j`` covers input ``[j*f, (j+1)*f)`` and its centre lies at input index
    ``j*f + (f - 1)/2`` (centre coordinates), the point its NGFF translation names. For odd ``f``
    that is one input pixel (returned twice); for even ``f`` it is the corner shared by two,
    ``(lo, hi)``. Indices past the input's end (a ceil-sized last pixel) are clamped to it.
    """
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    start = np.arange(n_out, dtype=np.int64) * factor
    lo = start + (factor - 1) // 2
    hi = start + factor // 2
    return np.minimum(lo, n_in - 1), np.minimum(hi, n_in - 1)


def labels_at_centres(
    ll: NDArray[np.uint8], lh: NDArray[np.uint8], hl: NDArray[np.uint8], hh: NDArray[np.uint8]
) -> NDArray[np.uint8]:
    """The label at each coarse pixel centre from its four nearest input pixels (row, col: lo/hi).

    The majority of the four; a tie goes to ``hh`` (then ``hl``, ``lh``), which is the half-open
    convention of the polygon rasteriser (a centre on an edge belongs to the pixel below/right).
    Labels are never averaged.
    """
    samples = (hh, hl, lh, ll)
    counts = np.stack([sum((a == b).astype(np.uint8) for b in samples) for a in samples])
    choice = np.argmax(counts, axis=0)
    return np.choose(choice, samples).astype(np.uint8)


def downsample_nearest_2x(labels: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """2x downsample of a whole (H, W) label array, each value taken at the coarse pixel centre.

    Coarse pixel ``j`` covers fine ``2j, 2j+1`` and its centre (NGFF translation of the level)
    is their shared corner, so the value is the majority of the 2x2 block, ties to its
    bottom-right pixel (see :func:`labels_at_centres`). Odd edges repeat the last pixel.
    """
    return downsample_labels(labels, 2)


def downsample_labels(labels: NDArray[np.uint8], factor: int) -> NDArray[np.uint8]:
    """``factor`` x downsample (ceil-sized) of a (H, W) label array, sampled at coarse pixel centres."""
    height, width = labels.shape
    rows_lo, rows_hi = centre_sample_indices(math.ceil(height / factor), factor, height)
    cols_lo, cols_hi = centre_sample_indices(math.ceil(width / factor), factor, width)
    return labels_at_centres(
        labels[np.ix_(rows_lo, cols_lo)],
        labels[np.ix_(rows_lo, cols_hi)],
        labels[np.ix_(rows_hi, cols_lo)],
        labels[np.ix_(rows_hi, cols_hi)],
    )


def block_origins(length_px: int, block_px: int) -> range:
    return range(0, length_px, block_px)
