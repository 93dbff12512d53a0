"""Small labelled training patches drawn with the same texture as the slides."""

from __future__ import annotations

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import MultiPolygon

from engine.synth.raster import EdgeTable, rasterise
from engine.synth.shapes import as_clean_multipolygon, random_blob
from engine.synth.spec import StainParams
from engine.synth.texture import TISSUE, TUMOUR, paint

_MIN_TUMOUR_SHARE = 0.08


def render_patch(
    rng: np.random.Generator,
    size_px: int = 128,
    mpp: float = 1.0,
    tumour: bool | None = None,
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """A random H&E-like patch and its class mask.

    The patch shows part of a tissue piece (sometimes its edge on glass) and, when tumour is
    drawn, part of a tumour region inside it; stain and brightness vary like scanners do.

    Parameters
    ----------
    rng
        Random generator; the patch is a deterministic function of its state.
    size_px
        Side of the square patch in pixels.
    mpp
        Microns per pixel of the patch (texture sizes are physical).
    tumour
        True: at least ~8 % of the patch is tumour. False: none. None: either, at random.

    Returns
    -------
    rgb
        uint8 array (size_px, size_px, 3).
    mask
        uint8 array (size_px, size_px): 0 background glass, 1 normal tissue, 2 tumour.
    """
    if size_px < 8:
        raise ValueError(f"size_px must be at least 8, got {size_px}")
    if mpp <= 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    want_tumour = bool(rng.random() < 0.5) if tumour is None else tumour
    stain = StainParams.sample(rng)
    seed = int(rng.integers(0, 2**62))
    # A random place in a large virtual slide, so patches do not share texture.
    x0 = float(rng.integers(0, 2**22))
    y0 = float(rng.integers(0, 2**22))
    s = float(size_px)
    centre = (x0 + s / 2, y0 + s / 2)

    for _attempt in range(20):
        tissue_r = s * rng.uniform(1.0, 4.0)
        if rng.random() < 0.35:  # the tissue edge crosses the patch
            dist = tissue_r + s * rng.uniform(-0.6, 0.2)
        else:
            dist = rng.uniform(0.0, max(0.0, tissue_r - s))
        ang = rng.uniform(0.0, 2.0 * np.pi)
        tissue = as_clean_multipolygon(
            random_blob(
                rng,
                (centre[0] - dist * np.cos(ang), centre[1] - dist * np.sin(ang)),
                tissue_r,
                aspect=rng.uniform(1.0, 1.8),
            )
        )
        tumour_geom = MultiPolygon()
        if want_tumour:
            tr = s * rng.uniform(0.25, 1.5)
            tc = (centre[0] + s * rng.uniform(-0.4, 0.4), centre[1] + s * rng.uniform(-0.4, 0.4))
            blob = random_blob(rng, tc, tr, aspect=rng.uniform(1.0, 2.0), roughness=0.25)
            tumour_geom = as_clean_multipolygon(shapely.intersection(blob, tissue))
        labels = _labels(tissue, tumour_geom, x0, y0, size_px)
        share = float(np.mean(labels == TUMOUR))
        if not want_tumour or share >= _MIN_TUMOUR_SHARE:
            break
    else:
        # Rare: fall back to a patch entirely inside tumour.
        labels = np.full((size_px, size_px), TUMOUR, dtype=np.uint8)

    rgb = paint(labels, x0_px=x0, y0_px=y0, downsample=1.0, mpp=mpp, stain=stain, seed=seed)
    return rgb, labels


def _labels(
    tissue: MultiPolygon, tumour: MultiPolygon, x0: float, y0: float, size_px: int
) -> NDArray[np.uint8]:
    in_tissue = rasterise(EdgeTable.from_geometry(tissue), x0, y0, size_px, size_px)
    labels = in_tissue.astype(np.uint8) * np.uint8(TISSUE)
    if not tumour.is_empty:
        in_tumour = rasterise(EdgeTable.from_geometry(tumour), x0, y0, size_px, size_px)
        labels[in_tumour & in_tissue] = TUMOUR
    return labels
