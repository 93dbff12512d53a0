"""Pixel confusion matrices of a multi-class map, over all tissue and over non-homogeneous tiles.

A tile is non-homogeneous when its valid pixels carry more than one true class: the borders
between tissue types, where a segmentation model's errors concentrate and where a whole-tissue
matrix, dominated by the interiors of large regions, hides them. Tiles are ``block_px`` square
blocks of the map's own grid (the model tiles' kept regions when ``block_px`` is the output
pixels per tile). Pure numpy.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from engine.metrics.multiclass import confusion_matrix


def non_homogeneous_tiles(
    truth: NDArray[np.integer], valid: NDArray[np.bool_], block_px: int
) -> tuple[NDArray[np.bool_], int]:
    """Pixel mask of the tiles with more than one true class on valid pixels, and their number."""
    if block_px < 1:
        raise ValueError(f"block_px must be >= 1, got {block_px}")
    height, width = truth.shape
    mask = np.zeros((height, width), bool)
    tiles = 0
    for y in range(0, height, block_px):
        for x in range(0, width, block_px):
            ok = valid[y : y + block_px, x : x + block_px]
            if ok.sum() < 2:
                continue
            classes = truth[y : y + block_px, x : x + block_px][ok]
            if classes.min() != classes.max():
                mask[y : y + block_px, x : x + block_px] = True
                tiles += 1
    return mask, tiles


def tile_confusions(
    pred: NDArray[np.integer],
    truth: NDArray[np.integer],
    valid: NDArray[np.bool_],
    *,
    n_classes: int,
    block_px: int,
) -> dict[str, tuple[NDArray[np.int64], int]]:
    """``{"all_tissue": (matrix, tiles), "non_homogeneous": (matrix, tiles)}``; rows = truth."""
    valid = np.asarray(valid, bool)
    rows = -(-truth.shape[0] // block_px)
    cols = -(-truth.shape[1] // block_px)
    any_valid = int(
        sum(
            bool(valid[y : y + block_px, x : x + block_px].any())
            for y in range(0, rows * block_px, block_px)
            for x in range(0, cols * block_px, block_px)
        )
    )
    mixed, n_mixed = non_homogeneous_tiles(truth, valid, block_px)
    return {
        "all_tissue": (confusion_matrix(pred, truth, valid, n_classes=n_classes), any_valid),
        "non_homogeneous": (
            confusion_matrix(pred, truth, valid & mixed, n_classes=n_classes),
            n_mixed,
        ),
    }


def percent_of_truth(matrix: NDArray[np.integer]) -> NDArray[np.float64]:
    """Row-normalised matrix in % (each true class's pixels sum to 100); NaN for empty rows."""
    m = np.asarray(matrix, np.float64)
    totals = m.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, 100.0 * m / totals, np.nan)
