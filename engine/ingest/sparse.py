"""Which chunks a sparse store materialises: pure functions of the tissue mask and level geometry.

A sparse store converts the levels finer than the tissue-detection level only in the chunks that
touch the tissue mask dilated by a margin in µm; the detection level and every coarser level are
complete. The result is a boolean *coverage* grid per level, one cell per chunk (``True`` =
written from the slide), which the store keeps so that nothing downstream reads a chunk that was
never written (it would read zarr's fill value, white glass).

A chunk of a level computed by 2x2 averaging needs its whole source region in the finer level, so
coverage is closed downwards: a written chunk of a computed level forces the chunks under it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from engine.ingest.pyramid import LevelPlan


def margin_px(margin_um: float, mask_pixel_um: float) -> int:
    """Dilation radius in mask pixels for ``margin_um``, plus one pixel for the mask's own rounding."""
    return math.ceil(margin_um / mask_pixel_um) + 1 if margin_um > 0 else 1


def dilate(mask: NDArray[np.bool_], radius_px: int) -> NDArray[np.bool_]:
    """Square (Chebyshev) dilation: every pixel within ``radius_px`` along both axes of tissue."""
    if radius_px <= 0 or not mask.any():
        return mask.astype(bool)
    return ndimage.maximum_filter(
        mask.astype(np.uint8), size=2 * radius_px + 1, mode="constant"
    ).astype(bool)


def _box_any(
    integral: NDArray[np.int64],
    y0: NDArray[np.int64],
    y1: NDArray[np.int64],
    x0: NDArray[np.int64],
    x1: NDArray[np.int64],
) -> NDArray[np.bool_]:
    """Whether any pixel of each box [y0, y1) x [x0, x1) is set, from a zero-padded integral image."""
    total = integral[y1[:, None], x1[None, :]] - integral[y0[:, None], x1[None, :]]
    total = total - integral[y1[:, None], x0[None, :]] + integral[y0[:, None], x0[None, :]]
    return total > 0


def integral_image(mask: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Summed-area table with a leading row and column of zeros."""
    out = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    out[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    return out


def chunk_grid_shape(plan: LevelPlan, chunk_px: int) -> tuple[int, int]:
    return math.ceil(plan.height_px / chunk_px), math.ceil(plan.width_px / chunk_px)


def touching_chunks(
    mask: NDArray[np.bool_], mask_downsample_yx: tuple[float, float], plan: LevelPlan, chunk_px: int
) -> NDArray[np.bool_]:
    """Chunks of ``plan`` whose area (in level-0 px) overlaps any set pixel of ``mask``.

    ``mask_downsample_yx`` is the mask's pixel size in level-0 px; a chunk's level-0 extent is
    mapped outwards (floor/ceil) onto mask pixels, so a chunk that shares any part of a mask pixel
    counts as touching it.
    """
    rows, cols = chunk_grid_shape(plan, chunk_px)
    ds_y, ds_x = mask_downsample_yx
    edges_y = np.minimum(np.arange(rows + 1) * chunk_px, plan.height_px) * plan.downsample_y
    edges_x = np.minimum(np.arange(cols + 1) * chunk_px, plan.width_px) * plan.downsample_x
    m_y0 = np.clip(np.floor(edges_y[:-1] / ds_y), 0, mask.shape[0]).astype(np.int64)
    m_y1 = np.clip(np.ceil(edges_y[1:] / ds_y), 0, mask.shape[0]).astype(np.int64)
    m_x0 = np.clip(np.floor(edges_x[:-1] / ds_x), 0, mask.shape[1]).astype(np.int64)
    m_x1 = np.clip(np.ceil(edges_x[1:] / ds_x), 0, mask.shape[1]).astype(np.int64)
    return _box_any(integral_image(mask), m_y0, m_y1, m_x0, m_x1)


def close_downwards(
    coarser: NDArray[np.bool_],
    finer_shape: tuple[int, int],
    coarser_chunk_px: int = 1,
    finer_chunk_px: int = 1,
) -> NDArray[np.bool_]:
    """Chunks of the 2x finer level under the written chunks of ``coarser``.

    A coarser pixel ``j`` is averaged from finer pixels ``2j, 2j+1``, so finer chunk ``r`` (pixels
    ``[r*f, (r+1)*f)``) is needed when coarser pixels ``[floor(r*f/2), ceil((r+1)*f/2))`` touch a
    written coarser chunk. The chunk sizes may differ (a level stored as the slide's own tiles).
    """
    c, f = coarser_chunk_px, finer_chunk_px
    rows, cols = np.arange(finer_shape[0]), np.arange(finer_shape[1])

    def span(index: NDArray[np.int64], limit: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        lo = (index * f // 2) // c
        coarser_end_px = -(-((index + 1) * f) // 2)  # ceil((i + 1) f / 2)
        hi = -(-coarser_end_px // c)
        return np.minimum(lo, limit).astype(np.int64), np.minimum(hi, limit).astype(np.int64)

    y0, y1 = span(rows, coarser.shape[0])
    x0, x1 = span(cols, coarser.shape[1])
    return _box_any(integral_image(coarser), y0, y1, x0, x1)


def plan_coverage(
    mask: NDArray[np.bool_],
    mask_downsample_yx: tuple[float, float],
    sparse_levels: Sequence[LevelPlan],
    chunk_px: int | Mapping[int, int],
) -> dict[int, NDArray[np.bool_]]:
    """Coverage grid of every sparse level (by level index), closed downwards for computed levels.

    ``mask`` is the dilated tissue mask. ``sparse_levels`` are ordered finest first; a computed
    level (``native_level is None``) is averaged from the level before it, which therefore must
    hold every chunk under the computed level's written chunks. ``chunk_px`` is one size for all
    levels or the size of each level (by index).
    """

    def size(plan: LevelPlan) -> int:
        return chunk_px if isinstance(chunk_px, int) else chunk_px[plan.index]

    coverage = {
        p.index: touching_chunks(mask, mask_downsample_yx, p, size(p)) for p in sparse_levels
    }
    ordered = list(sparse_levels)
    for finer, coarser in zip(reversed(ordered[:-1]), reversed(ordered[1:]), strict=True):
        if coarser.native_level is None:
            coverage[finer.index] |= close_downwards(
                coverage[coarser.index],
                coverage[finer.index].shape,
                size(coarser),
                size(finer),
            )
    return coverage


def covered_runs(row: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """[start, stop) runs of consecutive True cells of a 1-D coverage row."""
    padded = np.concatenate([[False], row.astype(bool), [False]])
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b)) for a, b in zip(changes[0::2], changes[1::2], strict=True)]
