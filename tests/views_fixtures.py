"""Inputs for the views tests that the pipeline cannot make: a multi-class prediction store.

The test models are single-channel; :func:`write_multiclass_prediction` writes a completed
``(C, H, W)`` store with the same NGFF metadata and completion record as infer's, so views'
class map is exercised on a real slide store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from engine.store import ngff, read_completion, write_completion
from engine.store.frame import Frame, resample_nearest
from engine.store.slide_store import SlideStore
from engine.views.grid import level_for_scale


def _on_grid(store: SlideStore, label: str, grid: Frame) -> np.ndarray:
    level = level_for_scale(store.label_levels(label), grid.pixel_um)
    return resample_nearest(np.asarray(store.label(label, level)[:]), level, grid, fill=0) > 0


def write_multiclass_prediction(
    root: Path, model_id: str, slide_id: str, class_names: tuple[str, ...], *, pixel_um: float = 8.0
) -> Path:
    """A completed (C, H, W) prediction store for ``slide_id``: class k wins in the k-th vertical band.

    The map is scored only where the slide has tissue (NaN elsewhere) and covers the slide in µm,
    like infer's stores.
    """
    store = SlideStore.open(root / "slides" / f"{slide_id}.ome.zarr")
    ds_x, ds_y = pixel_um / store.mpp_x, pixel_um / store.mpp_y
    height, width = int(np.ceil(store.height_px / ds_y)), int(np.ceil(store.width_px / ds_x))
    level = ngff.level_scale("0", store.mpp_y, store.mpp_x, ds_y, ds_x)
    grid = Frame(
        level.scale_y_um,
        level.scale_x_um,
        level.translation_y_um,
        level.translation_x_um,
        height,
        width,
    )
    tissue = _on_grid(store, "tissue", grid)
    n = len(class_names)
    band = np.minimum((np.arange(width) * n) // width, n - 1)
    scores = np.full((n, height, width), 0.1, np.float32)
    for k in range(n):
        scores[k][:, band == k] = 0.8
    scores[:, ~tissue] = np.nan

    path = root / "predictions" / model_id / f"{slide_id}.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=3)
    group.create_array(
        "0",
        data=scores,
        chunks=(n, 256, 256),
        compressors=[ZstdCodec(level=1)],
        dimension_names=("c", "y", "x"),
    )
    group.attrs["ome"] = ngff.score_map_attributes(slide_id, [level], list(class_names))
    group.attrs["slidefleet"] = {
        "slide_id": slide_id,
        "model_id": model_id,
        "model": "bands:1",
        "kind": "pixel_segmenter",
        "class_names": list(class_names),
        "output_px_um": pixel_um,
    }
    write_completion(path, {"input_key": {"test": "multiclass"}, "result": {}})
    assert read_completion(path) is not None
    return path
