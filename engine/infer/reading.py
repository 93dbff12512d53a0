"""Reading a model-px window out of a slide store: best pyramid level, then resampling."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from engine.store.slide_store import SlideStore, StoredLevel

GLASS_VALUE = 255  # outside the slide is white glass, as OpenSlide's transparent pixels composite


def read_level_window(array, x0: int, y0: int, width: int, height: int) -> NDArray[np.uint8]:
    """(3, height, width) of a (3, H, W) array; parts outside the array are glass."""
    _, level_h, level_w = array.shape
    out = np.full((3, height, width), GLASS_VALUE, np.uint8)
    ax0, ay0 = max(0, x0), max(0, y0)
    ax1, ay1 = min(level_w, x0 + width), min(level_h, y0 + height)
    if ax1 > ax0 and ay1 > ay0:
        out[:, ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0] = array[:, ay0:ay1, ax0:ax1]
    return out


def source_level(store: SlideStore, model_mpp: float) -> StoredLevel:
    """The coarsest stored level that is still at least as fine as the model needs."""
    return store.finest_level_not_coarser_than(model_mpp)


def read_model_window(
    store: SlideStore,
    level: StoredLevel,
    model_mpp: float,
    window: tuple[int, int, int, int],
) -> NDArray[np.uint8]:
    """RGB (height, width, 3) of a window given in model px, resampled from ``level``.

    Model px ``u`` maps to level px ``u * r`` with ``r = model_mpp / level_scale``; the level
    region covering the window is read once and area-resampled to the model grid (antialiased
    bilinear), or returned as is when the level already has the model's resolution.
    """
    x0, y0, width, height = window
    r_x = model_mpp / level.scale_x_um
    r_y = model_mpp / level.scale_y_um
    lx0, ly0 = math.floor(x0 * r_x), math.floor(y0 * r_y)
    lx1, ly1 = math.ceil((x0 + width) * r_x), math.ceil((y0 + height) * r_y)
    region = read_level_window(store.image(level), lx0, ly0, lx1 - lx0, ly1 - ly0)
    if region.shape[1:] == (height, width):
        return region.transpose(1, 2, 0)
    tensor = torch.from_numpy(region).unsqueeze(0).float()
    resized = F.interpolate(tensor, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return resized.squeeze(0).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def cut_tiles(
    window_rgb: NDArray[np.uint8], size_px: int, origins_yx: list[tuple[int, int]]
) -> NDArray[np.uint8]:
    """(N, size, size, 3) tiles cut from a window at the given (y, x) origins (window px)."""
    tiles = np.empty((len(origins_yx), size_px, size_px, 3), np.uint8)
    for index, (y, x) in enumerate(origins_yx):
        tiles[index] = window_rgb[y : y + size_px, x : x + size_px]
    return tiles
