"""Tissue detection on a low-resolution RGB image: pure compute, parameters in micrometres.

Method (the field's usual one, e.g. CLAM / WSInfer): tissue is stained, glass is not, so the HSV
saturation separates them. Otsu picks the threshold per slide (robust to stain and scanner
differences), with a floor so that blank glass (where Otsu would split noise) stays empty. Very
dark pixels (pen ink, folds filled with mounting medium, scanner black borders) are excluded.
Then morphological closing joins fragmented tissue, small specks are removed and small holes
(fat, lumen) filled, with every size given in µm / µm² and converted once with the mpp.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from skimage import color, filters, morphology


@dataclass(frozen=True)
class TissueParams:
    """Tissue-detection settings (sizes in µm so they mean the same at any resolution)."""

    target_mpp: float = 8.0
    min_saturation: float = 0.07
    max_dark_value: float = 0.12
    closing_radius_um: float = 16.0
    min_tissue_um2: float = 20_000.0
    max_hole_um2: float = 20_000.0


def detect_tissue(
    rgb: NDArray[np.uint8], mpp: float, params: TissueParams = TissueParams()
) -> NDArray[np.bool_]:
    """Boolean tissue mask of an RGB image whose pixels are ``mpp`` µm wide."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    hsv = color.rgb2hsv(rgb)
    saturation = hsv[..., 1]
    value = hsv[..., 2]
    threshold = params.min_saturation
    if float(saturation.max()) - float(saturation.min()) > 1e-6:
        threshold = max(float(filters.threshold_otsu(saturation)), params.min_saturation)
    mask = (saturation > threshold) & (value > params.max_dark_value)
    pixel_area_um2 = mpp * mpp
    radius_px = int(round(params.closing_radius_um / mpp))
    if radius_px >= 1:
        mask = closing_disk(mask, radius_px)
    min_size_px = max(1, int(round(params.min_tissue_um2 / pixel_area_um2)))
    mask = morphology.remove_small_objects(mask, max_size=min_size_px)
    hole_px = max(1, int(round(params.max_hole_um2 / pixel_area_um2)))
    mask = morphology.remove_small_holes(mask, max_size=hole_px)
    return mask.astype(bool)


def closing_disk(mask: NDArray[np.bool_], radius_px: int) -> NDArray[np.bool_]:
    """Binary closing by the disk ``x² + y² <= radius_px²`` with reflected borders: the result of
    ``skimage.morphology.closing(mask, disk(radius_px))``, in time independent of the radius.

    A pixel joins the dilation when its Euclidean distance to the mask is at most the radius, and
    stays in the erosion when its distance to the background exceeds it (exact distances, so the
    disk is the same set of offsets). The grey-morphology filter costs ~radius² per pixel: 2 s of
    a 512² slide whose only level is its 0.5 µm/px base (radius 32 px), where this takes ~30 ms.
    """
    r = int(radius_px)
    if r >= min(mask.shape):
        # A border reflected more than once: leave that to skimage (a tiny image, a cheap filter).
        return np.asarray(morphology.closing(mask, morphology.disk(r)), dtype=bool)
    padded = np.pad(mask.astype(bool), r, mode="symmetric")  # scipy's "reflect" border
    dilated = ndimage.distance_transform_edt(~padded) <= r
    dilated = np.pad(dilated[r:-r, r:-r], r, mode="symmetric")
    eroded = ndimage.distance_transform_edt(dilated) > r
    return np.asarray(eroded[r:-r, r:-r], dtype=bool)
