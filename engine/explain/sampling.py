"""Which tiles of a slide to explain and show: the top-scored, the worst false positives, the
worst false negatives (pure compute on one slide's output grid).

A tile is the kept (central) block one model tile writes into the score map: ``block_px`` output
pixels per side, so tile ``(row, col)`` covers output pixels ``[row * block_px, (row + 1) *
block_px)``. Only tiles at least ``min_tissue`` tissue are candidates. Rankings:

- **top-scored**: highest mean score on the tile's tissue;
- **false positive**: most predicted-positive pixels that are not annotated (ties: higher score);
- **false negative**: most annotated pixels not predicted (ties: lower score).

Each list holds up to ``n`` tiles with at least one such pixel (a slide without false negatives
has no false-negative rows); a tile may appear in more than one list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

TileKind = Literal["top_scored", "false_positive", "false_negative"]
TILE_KINDS: tuple[TileKind, ...] = ("top_scored", "false_positive", "false_negative")


@dataclass(frozen=True)
class TileChoice:
    """One sampled tile, in output-grid tile indices, with what ranked it."""

    kind: TileKind
    rank: int  # 1 = worst / top
    row: int
    col: int
    mean_score: float
    tissue_fraction: float
    predicted_fraction: float | None  # of the tile's tissue
    truth_fraction: float | None
    fp_fraction: float | None
    fn_fraction: float | None


def _block_sums(values: NDArray[np.float64], block_px: int) -> NDArray[np.float64]:
    """Sums over ``block_px`` blocks (the edge padded with zeros to whole blocks)."""
    rows = -(-values.shape[0] // block_px)
    cols = -(-values.shape[1] // block_px)
    padded = np.zeros((rows * block_px, cols * block_px), np.float64)
    padded[: values.shape[0], : values.shape[1]] = values
    return padded.reshape(rows, block_px, cols, block_px).sum(axis=(1, 3))


def sample_tiles(
    scores: NDArray[np.floating],
    tissue: NDArray[np.bool_],
    block_px: int,
    *,
    predicted: NDArray[np.bool_] | None = None,
    truth: NDArray[np.bool_] | None = None,
    n: int = 3,
    min_tissue: float = 0.25,
) -> list[TileChoice]:
    """Up to ``n`` tiles of each kind (false positives / negatives need ``predicted`` and ``truth``).

    ``scores`` is the explained class's score map (NaN unscored); every array is on its grid.
    """
    if block_px < 1:
        raise ValueError(f"block_px must be >= 1, got {block_px}")
    shape = scores.shape
    for name, array in (("tissue", tissue), ("predicted", predicted), ("truth", truth)):
        if array is not None and array.shape != shape:
            raise ValueError(f"{name} has shape {array.shape}, scores {shape}")
    valid = np.asarray(tissue, bool) & np.isfinite(scores)
    count = _block_sums(valid.astype(np.float64), block_px)
    area = float(block_px * block_px)
    candidate = count >= max(1.0, min_tissue * area)
    mean = np.where(
        count > 0,
        _block_sums(np.where(valid, scores, 0.0), block_px) / np.maximum(count, 1),
        np.nan,
    )

    def fraction(mask: NDArray[np.bool_] | None) -> NDArray[np.float64] | None:
        if mask is None:
            return None
        return _block_sums((mask & valid).astype(np.float64), block_px) / np.maximum(count, 1)

    pred_f, truth_f = fraction(predicted), fraction(truth)
    fp_f = fn_f = None
    if predicted is not None and truth is not None:
        fp_f, fn_f = fraction(predicted & ~truth), fraction(truth & ~predicted)

    def choice(kind: TileKind, rank: int, row: int, col: int) -> TileChoice:
        def at(a: NDArray[np.float64] | None) -> float | None:
            return None if a is None else float(a[row, col])

        return TileChoice(
            kind,
            rank,
            int(row),
            int(col),
            float(mean[row, col]),
            float(count[row, col] / area),
            at(pred_f),
            at(truth_f),
            at(fp_f),
            at(fn_f),
        )

    def ranked(
        kind: TileKind,
        primary: NDArray[np.float64],
        secondary: NDArray[np.float64],
        need_positive: bool,
    ) -> list[TileChoice]:
        rows, cols = np.nonzero(
            candidate & (primary > 0 if need_positive else np.isfinite(primary))
        )
        order = np.lexsort(
            (rows * primary.shape[1] + cols, -secondary[rows, cols], -primary[rows, cols])
        )
        return [choice(kind, i + 1, rows[j], cols[j]) for i, j in enumerate(order[:n])]

    chosen = ranked("top_scored", mean, mean, False) if n > 0 else []
    if n > 0 and fp_f is not None and fn_f is not None:
        chosen += ranked("false_positive", fp_f * count, mean, True)
        chosen += ranked("false_negative", fn_f * count, -mean, True)
    return chosen
