"""Reading a model-px window out of a slide store: one level, read as is or resampled exactly.

Frames. The *model frame* is a grid of ``f_x`` x ``f_y`` level-0 px per model px with its origin
at the slide's level-0 origin: model pixel ``u`` covers level-0 ``[u*f, (u+1)*f)``, so its centre
lies at ``((u + 0.5) * f - 0.5) * mpp`` µm in the slide store's physical frame (level-0 pixel
``k``'s centre is at ``k * mpp``). Every tile pixel is computed from that physical position only,
never from where the tile sits in its work unit, so scores do not depend on ``unit_tiles``.

Two ways to read (:func:`model_frame` decides, once per slide):

* **As stored**: a pyramid level whose pixel size is within ``mpp_tolerance`` (relative) of the
  model's is read pixel for pixel; the model frame *is* that level (``f`` = its downsample), as
  WSInfer and TIAToolbox do when a scanner reports 0.499 µm/px for a 0.5 µm/px model.
* **Resampled**: otherwise the coarsest level finer than the model is resampled with one
  separable antialiased (triangle) filter on physical coordinates at pixel centres
  (:func:`resample_taps`), bilinear when upsampling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from engine.infer.plan import TileGeometry, tile_geometry, tile_tissue_fraction
from engine.store.frame import Frame
from engine.store.slide_store import SlideStore

if TYPE_CHECKING:
    from engine.models import ModelCard

GLASS_VALUE = 255  # outside the slide is white glass, as OpenSlide's transparent pixels composite


@dataclass(frozen=True)
class ModelFrame:
    """How a slide is read for a model: the model grid (level-0 px per model px) and its source."""

    level0_per_model_px_x: float
    level0_per_model_px_y: float
    source_level: str
    """Path of the pyramid level the tiles are read from."""
    resampled: bool
    """False when that level is read pixel for pixel (its mpp is within the tolerance)."""
    model_mpp: float
    mpp_tolerance: float

    def provenance(self, store: SlideStore) -> dict[str, Any]:
        """What a prediction records about how its tiles were read."""
        return {
            "model_mpp": self.model_mpp,
            "mpp_tolerance": self.mpp_tolerance,
            "source_level": self.source_level,
            "resampled": self.resampled,
            "tile_mpp_x": self.level0_per_model_px_x * store.mpp_x,
            "tile_mpp_y": self.level0_per_model_px_y * store.mpp_y,
        }


def read_level_window(array: Any, x0: int, y0: int, width: int, height: int) -> NDArray[np.uint8]:
    """(3, height, width) of a (3, H, W) array; parts outside the array are glass."""
    _, level_h, level_w = array.shape
    out = np.full((3, height, width), GLASS_VALUE, np.uint8)
    ax0, ay0 = max(0, x0), max(0, y0)
    ax1, ay1 = min(level_w, x0 + width), min(level_h, y0 + height)
    if ax1 > ax0 and ay1 > ay0:
        out[:, ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0] = array[:, ay0:ay1, ax0:ax1]
    return out


def source_level(store: SlideStore, model_mpp: float) -> Frame:
    """The coarsest stored level that is still at least as fine as the model needs."""
    return store.finest_level_not_coarser_than(model_mpp)


def model_frame(store: SlideStore, model_mpp: float, mpp_tolerance: float) -> ModelFrame:
    """Read a level as stored when its mpp is within ``mpp_tolerance`` of the model's, else resample."""
    within = [
        level
        for level in store.levels
        if abs(level.scale_x_um / model_mpp - 1) <= mpp_tolerance
        and abs(level.scale_y_um / model_mpp - 1) <= mpp_tolerance
    ]
    if within:
        level = min(
            within, key=lambda lv: abs(math.log(lv.scale_x_um * lv.scale_y_um / model_mpp**2))
        )
        return ModelFrame(
            level.scale_x_um / store.mpp_x,
            level.scale_y_um / store.mpp_y,
            level.path,
            False,
            model_mpp,
            mpp_tolerance,
        )
    level = source_level(store, model_mpp)
    return ModelFrame(
        model_mpp / store.mpp_x, model_mpp / store.mpp_y, level.path, True, model_mpp, mpp_tolerance
    )


def resample_taps(
    u0: int,
    count: int,
    level0_per_model_px: float,
    mpp: float,
    scale_um: float,
    translation_um: float,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Source pixels and weights, (count, K) each, of model pixels ``u0 .. u0 + count - 1`` on one axis.

    The filter is a triangle centred on the model pixel's physical centre, as wide as one model
    pixel when downsampling (antialiased) and as one source pixel when upsampling (bilinear);
    weights are normalised. Everything is computed from absolute pixel indices, so a pixel gets the
    same taps and weights whichever window it is read in.
    """
    u = u0 + np.arange(count, dtype=np.float64)
    centre = (((u + 0.5) * level0_per_model_px - 0.5) * mpp - translation_um) / scale_um
    ratio = level0_per_model_px * mpp / scale_um  # source px per model px
    support = max(ratio, 1.0)
    first = np.floor(centre - support).astype(np.int64) + 1
    taps = first[:, None] + np.arange(int(math.ceil(2 * support)) + 1, dtype=np.int64)[None, :]
    weights = np.clip(1.0 - np.abs(taps - centre[:, None]) / support, 0.0, None)
    weights /= weights.sum(axis=1, keepdims=True)
    return taps, weights


def _is_identity(taps: NDArray[np.int64], weights: NDArray[np.float64]) -> bool:
    """Whether every model pixel is exactly one source pixel (weight 1), in order."""
    best = weights.argmax(axis=1)
    picked = taps[np.arange(taps.shape[0]), best]
    # 1e-9: a level that is the model grid can land an ulp off; rounding would give the same bytes.
    return bool(np.all(weights.max(axis=1) >= 1.0 - 1e-9) and np.all(np.diff(picked) == 1))


def read_model_window(
    store: SlideStore,
    level: Frame,
    level0_per_model_px: tuple[float, float],
    window: tuple[int, int, int, int],
) -> NDArray[np.uint8]:
    """RGB (height, width, 3) of a window given in model px (x0, y0, width, height), from ``level``.

    ``level0_per_model_px`` is (f_x, f_y) of the model frame. A level that *is* the model grid is
    copied; any other is resampled by :func:`resample_taps` (one filter, on physical positions).
    """
    x0, y0, width, height = window
    f_x, f_y = level0_per_model_px
    taps_x, w_x = resample_taps(
        x0, width, f_x, store.mpp_x, level.scale_x_um, level.translation_x_um
    )
    taps_y, w_y = resample_taps(
        y0, height, f_y, store.mpp_y, level.scale_y_um, level.translation_y_um
    )
    image = store.image(level)
    if _is_identity(taps_x, w_x) and _is_identity(taps_y, w_y):
        lx0 = int(taps_x[np.arange(width), w_x.argmax(axis=1)][0])
        ly0 = int(taps_y[np.arange(height), w_y.argmax(axis=1)][0])
        return read_level_window(image, lx0, ly0, width, height).transpose(1, 2, 0)
    lx0, lx1 = int(taps_x.min()), int(taps_x.max()) + 1
    ly0, ly1 = int(taps_y.min()), int(taps_y.max()) + 1
    region = read_level_window(image, lx0, ly0, lx1 - lx0, ly1 - ly0).astype(np.float64)
    # Separable, one tap at a time: each output value is the same sum, in the same order,
    # whatever window it was read in (bit-identical across work units).
    rows = np.zeros((3, height, region.shape[2]), np.float64)
    for k in range(taps_y.shape[1]):
        rows += w_y[None, :, k, None] * region[:, taps_y[:, k] - ly0, :]
    out = np.zeros((3, height, width), np.float64)
    for k in range(taps_x.shape[1]):
        out += w_x[None, None, :, k] * rows[:, :, taps_x[:, k] - lx0]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def cut_tiles(
    window_rgb: NDArray[np.uint8], size_px: int, origins_yx: list[tuple[int, int]]
) -> NDArray[np.uint8]:
    """(N, size, size, 3) tiles cut from a window at the given (y, x) origins (window px)."""
    tiles = np.empty((len(origins_yx), size_px, size_px, 3), np.uint8)
    for index, (y, x) in enumerate(origins_yx):
        tiles[index] = window_rgb[y : y + size_px, x : x + size_px]
    return tiles


def recorded_mpp_tolerance(attributes: Mapping[str, Any]) -> float:
    """The mpp tolerance a prediction's tiles were read with (its ``slidefleet`` attributes)."""
    from engine.infer.params import InferParams

    recorded = (attributes.get("infer_params") or {}).get("mpp_tolerance")
    return float(InferParams().mpp_tolerance if recorded is None else recorded)


def slide_tile_geometry(
    store: SlideStore, card: ModelCard, *, mpp_tolerance: float, unit_tiles: int
) -> tuple[ModelFrame, TileGeometry]:
    """The model frame and tile grid of a slide for a model: how infer tiles it, and so how
    anything reading its map back (tiles table, features) must place the tiles."""
    frame = model_frame(store, card.mpp, mpp_tolerance)
    geometry = tile_geometry(
        width_px=store.width_px,
        height_px=store.height_px,
        mpp_x=store.mpp_x,
        mpp_y=store.mpp_y,
        model_mpp=card.mpp,
        tile_size_px=card.tile_size_px,
        overlap_px=card.overlap_px,
        output_stride=card.output_stride,
        unit_tiles=unit_tiles,
        level0_per_model_px=(frame.level0_per_model_px_x, frame.level0_per_model_px_y),
        source_level=frame.source_level,
    )
    return frame, geometry


def store_tissue(store: SlideStore) -> tuple[Frame, NDArray[np.bool_]]:
    """The slide's tissue label at its finest level, with that level's frame."""
    (level, *_) = store.label_levels("tissue")
    return level, np.asarray(store.label("tissue", level)[:]).astype(bool)


def tiles_tissue_fraction(
    store: SlideStore,
    geometry: TileGeometry,
    rows: NDArray[np.integer],
    cols: NDArray[np.integer],
) -> NDArray[np.float64]:
    """Each tile's tissue fraction under the slide's tissue footprints (what selects tiles)."""
    level, tissue = store_tissue(store)
    fraction: NDArray[np.float64] = tile_tissue_fraction(
        geometry,
        rows,
        cols,
        tissue,
        tissue_scale_y_um=level.scale_y_um,
        tissue_scale_x_um=level.scale_x_um,
        tissue_translation_y_um=level.translation_y_um,
        tissue_translation_x_um=level.translation_x_um,
        mpp_x=store.mpp_x,
        mpp_y=store.mpp_y,
        width_px=store.width_px,
        height_px=store.height_px,
    )
    return fraction
