"""Bags of tiles: which tiles of a slide's features store a MIL model sees (pure compute).

``top_k``: each tile's score is the maximum of a score map's class channel over the tile's
level-0 box; the K highest-scoring tiles with enough tissue form the bag ("use the heatmap to
pick K tumour-likely patches"). ``all_tissue``: every tile with enough tissue. Indices are
returned in ascending order, so a bag never depends on how ties were broken.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def tile_scores_from_map(
    scores: NDArray[np.floating],
    coords: NDArray[np.integer],
    *,
    level0_px_per_map_px_x: float,
    level0_px_per_map_px_y: float,
    origin_x_level0_px: float = 0.0,
    origin_y_level0_px: float = 0.0,
) -> NDArray[np.float32]:
    """Max of a 2-D score map over each tile's level-0 box ``(x, y, w, h)``; NaN where unscored."""
    height, width = scores.shape
    out = np.full(len(coords), np.nan, np.float32)
    for index, (x, y, w, h) in enumerate(np.asarray(coords, np.float64)):
        c0 = int(np.floor((x - origin_x_level0_px) / level0_px_per_map_px_x))
        r0 = int(np.floor((y - origin_y_level0_px) / level0_px_per_map_px_y))
        c1 = int(np.ceil((x + w - origin_x_level0_px) / level0_px_per_map_px_x))
        r1 = int(np.ceil((y + h - origin_y_level0_px) / level0_px_per_map_px_y))
        window = scores[
            max(r0, 0) : min(max(r1, r0 + 1), height), max(c0, 0) : min(max(c1, c0 + 1), width)
        ]
        if window.size and np.isfinite(window).any():
            out[index] = float(np.nanmax(window))
    return out


def select_bag(
    tissue_fraction: NDArray[np.floating],
    *,
    min_tissue_fraction: float,
    k: int | None = None,
    tile_scores: NDArray[np.floating] | None = None,
) -> NDArray[np.int64]:
    """Indices of the bag's tiles, ascending.

    Without ``tile_scores`` every tile with ``tissue_fraction >= min_tissue_fraction``; with them
    the ``k`` highest-scoring such tiles (unscored tiles rank last; ties go to the lower index).
    A slide whose tiles all fall under the tissue threshold keeps its single most-tissue tile,
    so no slide has an empty bag.
    """
    fraction = np.asarray(tissue_fraction, np.float64)
    eligible = np.flatnonzero(fraction >= min_tissue_fraction)
    if eligible.size == 0 and fraction.size:
        eligible = np.array([int(np.argmax(fraction))])
    if tile_scores is None:
        return eligible.astype(np.int64)
    if k is None:
        raise ValueError("top-k selection needs k")
    score = np.asarray(tile_scores, np.float64)[eligible]
    score = np.where(np.isfinite(score), score, -np.inf)
    order = np.lexsort((eligible, -score))  # by score descending, then index ascending
    return np.sort(eligible[order[:k]]).astype(np.int64)
