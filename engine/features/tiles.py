"""Per-tile geometry in level-0 pixels and tissue fraction: pure functions, no I/O.

A tile ``(row, col)`` of a :class:`~engine.infer.plan.TileGeometry` *keeps* model px
``[col*step, (col+1)*step)``; in level-0 pixels that is ``[col*step*f, (col+1)*step*f)`` with
``f = model_mpp / slide_mpp``, clipped to the slide. Its tissue fraction is
:func:`engine.infer.plan.tile_tissue_fraction`: the exact share of that area under tissue
footprints, the rule that selected the tile for scoring.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from engine.infer.plan import tile_tissue_fraction

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


__all__ = ["tile_boxes_level0", "tile_tissue_fraction"]
