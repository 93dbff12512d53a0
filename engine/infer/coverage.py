"""Tiles only where a sparse store holds pixels: every read a scored tile makes must lie in written chunks.

A sparse store (see :mod:`engine.ingest.sparse`) converts its finer levels only around tissue and
records, per level, which chunks it wrote. Reading any other chunk would return zarr's fill value
(white glass) and score glass that was never looked at. So before a slide is scored, each selected
tile's read footprint, on the level it will be read from (context and resampling support
included), is checked against that level's coverage; a tissue tile that falls outside is an error
that names the margin needed, never a silently white tile.

Pure compute (:func:`tiles_inside_coverage`) plus one check that reads the store's grids.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from engine.errors import UnmaterialisedRegion
from engine.infer.plan import TileGeometry
from engine.infer.reading import source_level
from engine.ingest.sparse import integral_image
from engine.store.slide_store import SlideStore


def tiles_inside_coverage(
    geometry: TileGeometry,
    coverage: NDArray[np.bool_],
    chunk_px: int,
    *,
    level_shape_yx: tuple[int, int],
    level_scale_um_yx: tuple[float, float],
    read_mpp: float,
    footprint_px: int,
    mpp_x: float,
    mpp_y: float,
) -> NDArray[np.bool_]:
    """(n_rows, n_cols): True where a tile's footprint on the level lies in written chunks only.

    A tile's footprint is ``footprint_px`` pixels at ``read_mpp`` centred on the tile's kept
    region (the tile itself, context included, or a fusion tile at a coarser mpp), widened by the
    resampling kernel's support and the rounding of tile origins (``2 x read_mpp / level scale``
    level px, plus one). Parts outside the
    level are glass in every store, full or sparse, so only the part inside is checked.
    """
    scale_y, scale_x = level_scale_um_yx
    height, width = level_shape_yx
    centre_y_um = (
        (np.arange(geometry.n_rows) + 0.5)
        * geometry.step_px
        * geometry.level0_per_model_px_y
        * mpp_y
    )
    centre_x_um = (
        (np.arange(geometry.n_cols) + 0.5)
        * geometry.step_px
        * geometry.level0_per_model_px_x
        * mpp_x
    )
    half_um = footprint_px * read_mpp / 2

    def chunk_span(
        centre_um: NDArray[np.float64], scale: float, length: int
    ) -> tuple[NDArray[np.int64], ...]:
        pad = 2 * math.ceil(read_mpp / scale) + 1  # bilinear antialias support and origin rounding
        lo = np.clip(np.floor((centre_um - half_um) / scale) - pad, 0, length)
        hi = np.clip(np.ceil((centre_um + half_um) / scale) + pad, 0, length)
        first = (lo // chunk_px).astype(np.int64)
        last = np.where(hi > lo, (hi - 1) // chunk_px + 1, first).astype(np.int64)  # exclusive
        return first, last

    y0, y1 = chunk_span(centre_y_um, scale_y, height)
    x0, x1 = chunk_span(centre_x_um, scale_x, width)
    integral = integral_image(coverage)
    y0c, y1c = np.minimum(y0, coverage.shape[0]), np.minimum(y1, coverage.shape[0])
    x0c, x1c = np.minimum(x0, coverage.shape[1]), np.minimum(x1, coverage.shape[1])
    written = (
        integral[y1c[:, None], x1c[None, :]]
        - integral[y0c[:, None], x1c[None, :]]
        - integral[y1c[:, None], x0c[None, :]]
        + integral[y0c[:, None], x0c[None, :]]
    )
    needed = (y1 - y0)[:, None] * (x1 - x0)[None, :]
    return written == needed


def check_materialised(
    store: SlideStore,
    geometry: TileGeometry,
    selected: NDArray[np.bool_],
    *,
    model_name: str,
    reads: list[tuple[float, int]],
) -> None:
    """Raise :class:`UnmaterialisedRegion` unless every selected tile's reads lie in written chunks.

    ``reads`` are (mpp, footprint px) of every window a tile is scored from: the model's tile
    and, with fusion, the coarser tile. A full store passes at once.
    """
    sparse = store.sparse
    if not sparse.get("enabled"):
        return
    for read_mpp, footprint_px in reads:
        level = source_level(store, read_mpp)
        grid = store.chunk_coverage(level)
        if grid is None:
            continue
        coverage, chunk_px = grid
        inside = tiles_inside_coverage(
            geometry,
            coverage,
            chunk_px,
            level_shape_yx=(level.height_px, level.width_px),
            level_scale_um_yx=(level.scale_y_um, level.scale_x_um),
            read_mpp=read_mpp,
            footprint_px=footprint_px,
            mpp_x=store.mpp_x,
            mpp_y=store.mpp_y,
        )
        outside = selected & ~inside
        if outside.any():
            needed_um = math.ceil(footprint_px * read_mpp) + 16
            raise UnmaterialisedRegion(
                f"slide {store.slide_id}: {int(outside.sum())} of {int(selected.sum())} tissue tiles of model "
                f"{model_name} ({footprint_px} px at {read_mpp:g} µm/px = {footprint_px * read_mpp:g} µm) need "
                f"pixels of level {level.path} that this sparse store never converted: it was ingested with "
                f"sparse_margin_um {sparse.get('margin_um')} around tissue. Re-ingest with "
                f"ingest.sparse_margin_um: {needed_um} (or ingest.sparse: false for a full store)."
            )
