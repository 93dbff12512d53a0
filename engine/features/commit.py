"""Committing a slide's features store: gather the units, add geometry and tissue, rename."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.features.store import finalise_features, gather_units
from engine.features.tiles import tile_boxes_level0
from engine.infer.reading import tiles_tissue_fraction
from engine.store.slide_store import SlideStore

if TYPE_CHECKING:
    from engine.infer.plan import TileGeometry


def commit_features(
    store: SlideStore,
    partial: Path,
    final_path: Path,
    key: dict[str, Any],
    geometry: TileGeometry,
    unit_keys: list[str],
    *,
    dtype: str,
    attributes: dict[str, Any],
    result: dict[str, Any],
) -> int:
    """Gather every unit of a finished slide into its features store; returns the tile count."""
    grid, features = gather_units(partial, unit_keys)
    rows, cols = grid[:, 0], grid[:, 1]
    coords = tile_boxes_level0(
        geometry, rows, cols, width_px=store.width_px, height_px=store.height_px
    )
    fraction = tiles_tissue_fraction(store, geometry, rows, cols)
    finalise_features(
        partial,
        final_path,
        key,
        grid=grid,
        features=features,
        coords=coords,
        tissue_fraction=fraction,
        dtype=dtype,
        attributes={
            **attributes,
            # The tile grid, so per-tile values (attention, scores) can be laid out as a map.
            "grid_shape": [geometry.n_rows, geometry.n_cols],
            "tile_level0_px": [
                geometry.step_px * geometry.level0_per_model_px_y,
                geometry.step_px * geometry.level0_per_model_px_x,
            ],
            "slide_mpp": [store.mpp_y, store.mpp_x],
        },
        result=result,
    )
    return len(grid)
