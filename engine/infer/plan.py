"""Planning tiles at the model's resolution: pure functions of geometry, no I/O.

Frames. *Model px*: the grid the model sees, ``card.mpp`` µm per pixel, origin at the slide's
level-0 origin, so model pixel ``u`` covers level-0 ``[u*f, (u+1)*f)`` with ``f = card.mpp / mpp``
(or, when a pyramid level's mpp is within the tolerance of the model's, that level's downsample:
the level is then the model grid, read pixel for pixel).
Tile ``(row, col)`` *keeps* model px ``[col*step, (col+1)*step)`` (``step = tile - overlap``) and
reads ``overlap/2`` more on every side for context. Each tile yields ``k = step / stride`` output
pixels per side (1 for a patch classifier), so output pixel ``i`` covers ``stride`` model px.

A *work unit* is a block of ``unit_tiles x unit_tiles`` tiles whose output block is exactly one
chunk of the output array: one writer per chunk, so concurrent actors never share a chunk and a
retried unit simply rewrites its own chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class TileGeometry:
    """The tile grid and output grid of one slide for one model."""

    tile_size_px: int
    step_px: int
    crop_px: int
    stride_px: int
    out_per_tile_px: int
    model_mpp: float
    level0_per_model_px_x: float
    level0_per_model_px_y: float
    n_rows: int
    n_cols: int
    unit_tiles: int
    source_level: str | None = None
    """Pyramid level the tiles are read from (see ``engine.infer.reading.model_frame``)."""

    @property
    def out_height_px(self) -> int:
        return self.n_rows * self.out_per_tile_px

    @property
    def out_width_px(self) -> int:
        return self.n_cols * self.out_per_tile_px

    @property
    def out_chunk_px(self) -> int:
        return self.unit_tiles * self.out_per_tile_px

    @property
    def level0_per_out_px_x(self) -> float:
        return self.level0_per_model_px_x * self.stride_px

    @property
    def level0_per_out_px_y(self) -> float:
        return self.level0_per_model_px_y * self.stride_px

    @property
    def n_unit_rows(self) -> int:
        return math.ceil(self.n_rows / self.unit_tiles)

    @property
    def n_unit_cols(self) -> int:
        return math.ceil(self.n_cols / self.unit_tiles)


def tile_geometry(
    *,
    width_px: int,
    height_px: int,
    mpp_x: float,
    mpp_y: float,
    model_mpp: float,
    tile_size_px: int,
    overlap_px: int,
    output_stride: int,
    unit_tiles: int,
    level0_per_model_px: tuple[float, float] | None = None,
    source_level: str | None = None,
) -> TileGeometry:
    """Tile and output grids covering the whole slide (partial edge tiles included).

    ``level0_per_model_px`` (f_x, f_y) overrides ``model_mpp / mpp`` when a pyramid level is read
    as the model grid (its mpp within the tolerance of the model's).
    """
    step = tile_size_px - overlap_px
    f_x, f_y = level0_per_model_px or (model_mpp / mpp_x, model_mpp / mpp_y)
    stride = output_stride if output_stride < step else step
    return TileGeometry(
        tile_size_px=tile_size_px,
        step_px=step,
        crop_px=overlap_px // 2,
        stride_px=stride,
        out_per_tile_px=step // stride,
        model_mpp=model_mpp,
        level0_per_model_px_x=f_x,
        level0_per_model_px_y=f_y,
        n_rows=max(1, math.ceil(height_px / (f_y * step))),
        n_cols=max(1, math.ceil(width_px / (f_x * step))),
        unit_tiles=unit_tiles,
        source_level=source_level,
    )


def _tile_span(
    n_px: int,
    scale_um: float,
    translation_um: float,
    tile_um: float,
    origin_um: float,
    n_tiles: int,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """First and last tile (inclusive) whose kept region overlaps each mask pixel's footprint.

    Mask pixel ``i`` covers ``[t + (i - 0.5) s, t + (i + 0.5) s)`` µm; tile ``c`` keeps
    ``[origin + c * tile, origin + (c + 1) * tile)``. Overlaps of zero length do not count.
    """
    centres = translation_um + np.arange(n_px, dtype=np.float64) * scale_um
    lo = (centres - scale_um / 2 - origin_um) / tile_um
    hi = (centres + scale_um / 2 - origin_um) / tile_um
    first = np.clip(np.floor(lo).astype(np.int64), 0, n_tiles - 1)
    last = np.clip(np.ceil(hi).astype(np.int64) - 1, 0, n_tiles - 1)
    return first, np.maximum(first, last)


def _any_over_spans(
    mask: NDArray[np.bool_], first: NDArray[np.int64], last: NDArray[np.int64], n: int
) -> NDArray[np.bool_]:
    """(n, W): row ``r`` is the OR of the mask rows ``i`` whose span ``first[i]..last[i]`` holds ``r``."""
    out = np.zeros((n, mask.shape[1]), dtype=bool)
    for offset in range(int((last - first).max(initial=0)) + 1):
        rows = first + offset
        keep = (rows <= last) & mask.any(axis=1)
        np.logical_or.at(out, rows[keep], mask[keep])
    return out


def tissue_tiles(
    geometry: TileGeometry,
    tissue: NDArray[np.bool_],
    *,
    tissue_scale_y_um: float,
    tissue_scale_x_um: float,
    tissue_translation_y_um: float,
    tissue_translation_x_um: float,
    mpp_x: float,
    mpp_y: float,
) -> NDArray[np.bool_]:
    """Which tiles to score: (n_rows, n_cols), True where any tissue pixel overlaps the kept region.

    A tissue pixel's footprint is the square its NGFF scale and translation give it; a tile is
    scored if any tissue footprint overlaps what it keeps, so every tissue pixel lies under a
    scored tile (whatever the two resolutions are), and post finds no tissue without a score.
    """
    # Model px u covers level-0 [u*f, (u+1)*f); level-0 pixel k's centre is at k * mpp µm.
    tile_x_um = geometry.step_px * geometry.level0_per_model_px_x * mpp_x
    tile_y_um = geometry.step_px * geometry.level0_per_model_px_y * mpp_y
    cols = _tile_span(
        tissue.shape[1],
        tissue_scale_x_um,
        tissue_translation_x_um,
        tile_x_um,
        -mpp_x / 2,
        geometry.n_cols,
    )
    rows = _tile_span(
        tissue.shape[0],
        tissue_scale_y_um,
        tissue_translation_y_um,
        tile_y_um,
        -mpp_y / 2,
        geometry.n_rows,
    )
    by_row = _any_over_spans(tissue.astype(bool), *rows, geometry.n_rows)  # (n_rows, W)
    return _any_over_spans(by_row.T, *cols, geometry.n_cols).T


def _axis_overlap(
    tiles: NDArray[np.float64],
    n_px: int,
    scale_um: float,
    translation_um: float,
    tile_um: float,
    origin_um: float,
    end_um: float,
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Per tile: mask pixel indices (N, K), their overlap in µm with the kept span (N, K), span length (N,).

    The kept span of tile ``t`` is ``[origin + t * tile, origin + (t + 1) * tile)`` clipped to
    ``end``; mask pixel ``i`` covers ``[t + (i - 0.5) s, t + (i + 0.5) s)`` (the same footprints
    :func:`_tile_span` uses).
    """
    lo = origin_um + tiles * tile_um
    hi = np.minimum(lo + tile_um, end_um)
    first = np.floor((lo - translation_um) / scale_um + 0.5).astype(np.int64)
    last = np.ceil((hi - translation_um) / scale_um - 0.5).astype(np.int64)
    k = int(max(1, (last - first).max(initial=0) + 1))
    index = first[:, None] + np.arange(k)[None, :]
    px_lo = translation_um + (index - 0.5) * scale_um
    overlap = np.clip(
        np.minimum(px_lo + scale_um, hi[:, None]) - np.maximum(px_lo, lo[:, None]), 0.0, None
    )
    overlap[(index < 0) | (index >= n_px)] = 0.0
    return np.clip(index, 0, n_px - 1), overlap, np.maximum(hi - lo, 0.0)


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
    width_px: int,
    height_px: int,
) -> NDArray[np.float32]:
    """Share in [0, 1] of each tile's kept area (clipped to the slide) covered by tissue footprints.

    Exact area overlap with the footprints :func:`tissue_tiles` selects by, so a tile is
    selected exactly when its fraction is above 0 (``(N,)`` for tiles ``rows``, ``cols``).
    """
    tile_x_um = geometry.step_px * geometry.level0_per_model_px_x * mpp_x
    tile_y_um = geometry.step_px * geometry.level0_per_model_px_y * mpp_y
    iy, wy, ly = _axis_overlap(
        np.asarray(rows, np.float64),
        tissue.shape[0],
        tissue_scale_y_um,
        tissue_translation_y_um,
        tile_y_um,
        -mpp_y / 2,
        (height_px - 0.5) * mpp_y,
    )
    ix, wx, lx = _axis_overlap(
        np.asarray(cols, np.float64),
        tissue.shape[1],
        tissue_scale_x_um,
        tissue_translation_x_um,
        tile_x_um,
        -mpp_x / 2,
        (width_px - 0.5) * mpp_x,
    )
    on = tissue.astype(bool)[iy[:, :, None], ix[:, None, :]]  # (N, Ky, Kx)
    covered = np.einsum("nyx,ny,nx->n", on.astype(np.float64), wy, wx)
    area = ly * lx
    fraction = np.divide(covered, area, out=np.zeros_like(covered), where=area > 0)
    return np.clip(fraction, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class WorkUnit:
    """A block of tiles scored and written together (one output chunk)."""

    slide_id: str
    unit_row: int
    unit_col: int
    row0: int
    col0: int
    rows: int
    cols: int
    tile_mask: tuple[tuple[bool, ...], ...]  # (rows, cols): which tiles of the block to score

    @property
    def key(self) -> str:
        return f"{self.unit_row}.{self.unit_col}"

    @property
    def n_tiles(self) -> int:
        return sum(sum(row) for row in self.tile_mask)


def plan_units(
    slide_id: str, geometry: TileGeometry, selected: NDArray[np.bool_]
) -> list[WorkUnit]:
    """Units that contain at least one selected tile, in row-major order."""
    units = []
    u = geometry.unit_tiles
    for unit_row in range(geometry.n_unit_rows):
        for unit_col in range(geometry.n_unit_cols):
            block = selected[unit_row * u : (unit_row + 1) * u, unit_col * u : (unit_col + 1) * u]
            if not block.any():
                continue
            units.append(
                WorkUnit(
                    slide_id=slide_id,
                    unit_row=unit_row,
                    unit_col=unit_col,
                    row0=unit_row * u,
                    col0=unit_col * u,
                    rows=block.shape[0],
                    cols=block.shape[1],
                    tile_mask=tuple(tuple(bool(v) for v in row) for row in block),
                )
            )
    return units


def unit_input_window(geometry: TileGeometry, unit: WorkUnit) -> tuple[int, int, int, int]:
    """(x0, y0, width, height) in model px of everything the unit's tiles read, context included."""
    x0 = unit.col0 * geometry.step_px - geometry.crop_px
    y0 = unit.row0 * geometry.step_px - geometry.crop_px
    width = unit.cols * geometry.step_px + 2 * geometry.crop_px
    height = unit.rows * geometry.step_px + 2 * geometry.crop_px
    return x0, y0, width, height
