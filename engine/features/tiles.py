"""Per-tile geometry in level-0 pixels and tissue fraction: pure functions, no I/O.

A tile ``(row, col)`` of a :class:`~engine.infer.plan.TileGeometry` *keeps* model px
``[col*step, (col+1)*step)``; in level-0 pixels that is ``[col*step*f, (col+1)*step*f)`` with
``f = model_mpp / slide_mpp``, clipped to the slide. Its tissue fraction is the share of a
``samples_per_side``² grid of points over that region that fall on the slide's tissue mask
(nearest pixel centre), the same sampling that selected the tile for scoring.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from engine.infer.plan import TileGeometry



def tile_boxes_level0(
    geometry: TileGeometry,
    rows: NDArray[np.integer],
    cols: NDArray[np.integer],
    *,
    width_px: int,
    height_px: int,
) -> NDArray[np.int64]:
    """``(N, 4)`` x, y, width, height of each tile's kept region in level-0 pixels."""
    step = geometry.step_px
    x0 = np.rint(np.asarray(cols) * step * geometry.level0_per_model_px_x).astype(np.int64)
    y0 = np.rint(np.asarray(rows) * step * geometry.level0_per_model_px_y).astype(np.int64)
    x1 = np.rint((np.asarray(cols) + 1) * step * geometry.level0_per_model_px_x).astype(np.int64)
    y1 = np.rint((np.asarray(rows) + 1) * step * geometry.level0_per_model_px_y).astype(np.int64)
    x1, y1 = np.minimum(x1, width_px), np.minimum(y1, height_px)
    return np.stack([x0, y0, np.maximum(x1 - x0, 0), np.maximum(y1 - y0, 0)], axis=1)


def tile_tissue_fraction(
    geometry: TileGeometry,
    rows: NDArray[np.integer],
    cols: NDArray[np.integer],
    tissue: NDArray[np.bool_],
    *,
    tissue_scale_y_um: float,
    tissue_scale_x_um: float,
    tissue_translation_y_um: float,
    tissue_translation_x_um: float,
    mpp_x: float,
    mpp_y: float,
    samples_per_side: int = 8,
) -> NDArray[np.float32]:
    """Fraction in [0, 1] of each tile's kept region that lies on tissue (``(N,)``)."""
    rows = np.asarray(rows, np.float64)
    cols = np.asarray(cols, np.float64)
    offsets = (np.arange(samples_per_side) + 0.5) / samples_per_side
    grid_y = (rows[:, None] + offsets[None, :]) * geometry.step_px  # (N, s) model px
    grid_x = (cols[:, None] + offsets[None, :]) * geometry.step_px
    y_um = grid_y * geometry.level0_per_model_px_y * mpp_y
    x_um = grid_x * geometry.level0_per_model_px_x * mpp_x
    iy = np.rint((y_um - tissue_translation_y_um) / tissue_scale_y_um).astype(np.int64)
    ix = np.rint((x_um - tissue_translation_x_um) / tissue_scale_x_um).astype(np.int64)
    inside_y = (iy >= 0) & (iy < tissue.shape[0])
    inside_x = (ix >= 0) & (ix < tissue.shape[1])
    cy = np.clip(iy, 0, tissue.shape[0] - 1)
    cx = np.clip(ix, 0, tissue.shape[1] - 1)
    samples = tissue[cy[:, :, None], cx[:, None, :]]  # (N, s, s)
    samples &= inside_y[:, :, None] & inside_x[:, None, :]
    return samples.mean(axis=(1, 2)).astype(np.float32)
