"""Slide quality measures on one RGB image of a slide at a stated resolution (pure compute).

The measures labs take from HistoQC, each defined on the image's pixels at ``pixel_um`` µm/px:

- tissue area (mm²) and fraction of the slide;
- brightness (mean luminance), RMS contrast (standard deviation of luminance) and mean HSV
  saturation, on tissue;
- stain: mean haematoxylin and eosin optical densities on tissue (colour deconvolution,
  ``skimage.color.rgb2hed``) and the Macenko stain vectors (Macenko et al. 2009: optical-density
  plane of the two leading eigenvectors, stain directions at the 1st and 99th angle percentiles);
- blur: variance of the Laplacian of luminance per tissue tile (tiles of ``blur_tile_um``, at
  least half tissue); a tile below ``blur_threshold`` is blurred; the median and the blurred
  fraction are reported. The Laplacian variance depends on resolution: compare slides at the same
  ``pixel_um`` (the QC stage reads every slide at one).
- pen marks: saturated pixels whose hue is green to blue (ink), not H&E's pink to purple;
- dark debris: near-black pixels (folds, dirt, marker);
- white (over-exposed) fraction: pixels with every channel at or above ``white_level``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from skimage import color


@dataclass(frozen=True)
class QualityParams:
    """Thresholds of the slide-quality measures (sizes in µm)."""

    blur_tile_um: float = 128.0
    blur_threshold: float = 2e-4  # Laplacian variance of luminance in [0, 1] units
    pen_hue_range_deg: tuple[float, float] = (75.0, 230.0)  # green → blue; H&E (≥ 250°) outside
    pen_min_saturation: float = 0.25
    dark_level: float = 0.15  # luminance
    white_level: int = 245  # every channel ≥ this is over-exposed glass / washed-out tissue
    macenko_beta: float = 0.15  # optical densities below this are background
    macenko_alpha_pct: float = 1.0


@dataclass(frozen=True)
class SlideQuality:
    """One slide's quality measures; ``None`` where a measure has nothing to measure."""

    pixel_um: float
    tissue_area_mm2: float
    tissue_fraction: float
    brightness: float | None
    contrast: float | None
    saturation: float | None
    hematoxylin_od: float | None
    eosin_od: float | None
    stain_vector_h: tuple[float, float, float] | None
    stain_vector_e: tuple[float, float, float] | None
    laplacian_var_median: float | None
    blurred_tile_fraction: float | None
    tissue_tiles: int
    pen_fraction: float
    dark_fraction: float
    white_fraction: float


def _luminance(rgb: NDArray[np.uint8]) -> NDArray[np.float64]:
    return np.asarray(color.rgb2gray(rgb), np.float64)


def _mean_on(values: NDArray[np.float64], mask: NDArray[np.bool_]) -> float | None:
    return float(values[mask].mean()) if mask.any() else None


def laplacian_variance_per_tile(
    luminance: NDArray[np.float64], tissue: NDArray[np.bool_], tile_px: int
) -> NDArray[np.float64]:
    """Variance of the Laplacian of each ``tile_px`` tile that is at least half tissue."""
    laplacian = ndimage.laplace(luminance)
    height, width = luminance.shape
    out = []
    for y in range(0, height - tile_px + 1, tile_px):
        for x in range(0, width - tile_px + 1, tile_px):
            if tissue[y : y + tile_px, x : x + tile_px].mean() >= 0.5:
                out.append(float(laplacian[y : y + tile_px, x : x + tile_px].var()))
    return np.asarray(out, np.float64)


def macenko_stain_vectors(
    rgb_on_tissue: NDArray[np.uint8], beta: float = 0.15, alpha_pct: float = 1.0
) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    """Unit optical-density vectors (H, E) of tissue pixels ``(N, 3)``; ``None`` if too few."""
    od = -np.log((rgb_on_tissue.astype(np.float64) + 1.0) / 256.0)
    od = od[(od > beta).all(axis=1)]
    if od.shape[0] < 50:
        return None
    _, vectors = np.linalg.eigh(np.cov(od, rowvar=False))
    plane = vectors[:, 1:3]  # the two largest eigenvalues (eigh sorts ascending)
    projected = od @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, [alpha_pct, 100.0 - alpha_pct])
    first = plane @ np.array([np.cos(low), np.sin(low)])
    second = plane @ np.array([np.cos(high), np.sin(high)])
    first, second = (v if v[0] >= 0 else -v for v in (first, second))  # positive OD
    # Haematoxylin absorbs more red than eosin does: the vector with the larger red OD is H.
    h, e = (first, second) if first[0] > second[0] else (second, first)
    return h / np.linalg.norm(h), e / np.linalg.norm(e)


def slide_quality(
    rgb: NDArray[np.uint8],
    tissue: NDArray[np.bool_],
    pixel_um: float,
    params: QualityParams = QualityParams(),
) -> SlideQuality:
    """Quality measures of an ``(H, W, 3)`` RGB image and its tissue mask at ``pixel_um`` µm/px."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    tissue = np.asarray(tissue, bool)
    if tissue.shape != rgb.shape[:2]:
        raise ValueError(f"tissue mask {tissue.shape} does not match the image {rgb.shape[:2]}")
    if not pixel_um > 0:
        raise ValueError(f"pixel_um must be positive, got {pixel_um}")
    luminance = _luminance(rgb)
    hsv = color.rgb2hsv(rgb)
    hue_deg, sat = hsv[..., 0] * 360.0, hsv[..., 1]
    hed = color.rgb2hed(rgb)

    tile_px = max(8, int(round(params.blur_tile_um / pixel_um)))
    lap = laplacian_variance_per_tile(luminance, tissue, tile_px)
    vectors = macenko_stain_vectors(rgb[tissue], params.macenko_beta, params.macenko_alpha_pct)
    low_hue, high_hue = params.pen_hue_range_deg
    pen = (hue_deg >= low_hue) & (hue_deg <= high_hue) & (sat >= params.pen_min_saturation)
    pixels = float(tissue.size)
    return SlideQuality(
        pixel_um=pixel_um,
        tissue_area_mm2=float(tissue.sum()) * pixel_um * pixel_um / 1e6,
        tissue_fraction=float(tissue.sum()) / pixels,
        brightness=_mean_on(luminance, tissue),
        contrast=float(luminance[tissue].std()) if tissue.any() else None,
        saturation=_mean_on(sat, tissue),
        hematoxylin_od=_mean_on(hed[..., 0], tissue),
        eosin_od=_mean_on(hed[..., 1], tissue),
        stain_vector_h=tuple(float(v) for v in vectors[0]) if vectors else None,  # type: ignore[arg-type]
        stain_vector_e=tuple(float(v) for v in vectors[1]) if vectors else None,  # type: ignore[arg-type]
        laplacian_var_median=float(np.median(lap)) if lap.size else None,
        blurred_tile_fraction=float((lap < params.blur_threshold).mean()) if lap.size else None,
        tissue_tiles=int(lap.size),
        pen_fraction=float(pen.sum()) / pixels,
        dark_fraction=float((luminance < params.dark_level).sum()) / pixels,
        white_fraction=float((rgb >= params.white_level).all(axis=2).sum()) / pixels,
    )
