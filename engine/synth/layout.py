"""Plans a slide's geometry: where the tissue lies and how much of it is tumour."""

from __future__ import annotations

import logging

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, box

from engine.errors import ConfigError
from engine.synth.shapes import as_clean_multipolygon, random_blob
from engine.synth.spec import BURDEN_CLASSES, BurdenClass, SlideSpec, StainParams

logger = logging.getLogger(__name__)

TISSUE_COVER_RANGE = (0.2, 0.6)
"""Share of the slide area that tissue covers."""

MAX_TISSUE_FRACTION = 0.8
"""Largest tissue share a slide can be asked for (tissue keeps off a 3 % border)."""

BURDEN_LIMITS: dict[BurdenClass, tuple[float, float]] = {
    "none": (0.0, 0.0),
    "micro": (0.0, 0.004),
    "small": (0.004, 0.02),
    "macro": (0.02, 1.0),
}
"""Tumour share of tissue area per burden class, as [low, high) (micro excludes 0)."""

_BURDEN_TARGETS: dict[BurdenClass, tuple[float, float]] = {
    "micro": (0.0006, 0.003),
    "small": (0.006, 0.015),
    "macro": (0.04, 0.18),
}
_MAX_TRIES = 60


def burden_class_of(fraction: float) -> BurdenClass:
    """The burden class of a tumour share of tissue area."""
    if fraction <= 0.0:
        return "none"
    if fraction < BURDEN_LIMITS["micro"][1]:
        return "micro"
    if fraction <= BURDEN_LIMITS["small"][1]:
        return "small"
    return "macro"


def make_slide_spec(
    slide_id: str,
    *,
    width_px: int,
    height_px: int,
    mpp: float,
    seed: int,
    burden_class: BurdenClass,
    tissue_fraction: float | None = None,
) -> SlideSpec:
    """Draw a slide: tissue pieces, tumour regions of the requested burden, stain variation.

    Parameters
    ----------
    slide_id
        Identifier of the slide.
    width_px, height_px
        Level-0 size.
    mpp
        Level-0 microns per pixel.
    seed
        Seed of everything random about the slide.
    burden_class
        One of none, micro (< 0.4 % of tissue), small (0.4–2 %), macro (> 2 %).
    tissue_fraction
        Share of the slide area tissue should cover (within ±15 % of it); default: a random
        share in 20–60 %.
    """
    if burden_class not in BURDEN_CLASSES:
        raise ConfigError(f"burden_class must be one of {BURDEN_CLASSES}, got {burden_class!r}")
    if width_px < 64 or height_px < 64:
        raise ConfigError(f"slide must be at least 64 x 64 px, got {width_px} x {height_px}")
    if not mpp > 0:
        raise ConfigError(f"mpp must be positive, got {mpp}")
    if tissue_fraction is not None and not 0.01 <= tissue_fraction <= MAX_TISSUE_FRACTION:
        raise ConfigError(
            f"tissue_fraction must be in [0.01, {MAX_TISSUE_FRACTION}], got {tissue_fraction}"
        )
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x51DE]))
    stain = StainParams.sample(rng)
    texture_seed = int(rng.integers(0, 2**62))
    tissue = _tissue(rng, width_px, height_px, tissue_fraction)
    tumour = _tumour(rng, tissue, burden_class)
    return SlideSpec(
        slide_id=slide_id,
        width_px=int(width_px),
        height_px=int(height_px),
        mpp=float(mpp),
        seed=texture_seed,
        tissue=tissue,
        tumour=tumour,
        stain=stain,
        burden_class=burden_class,
    )


def _tissue(
    rng: np.random.Generator, width_px: int, height_px: int, fraction: float | None = None
) -> MultiPolygon:
    """A few irregular tissue pieces covering 20–60 % of the slide (or ``fraction`` ± 15 %), kept
    off its border."""
    margin = 0.03 * min(width_px, height_px)
    frame = box(margin, margin, width_px - margin, height_px - margin)
    slide_area = float(width_px * height_px)
    target = rng.uniform(0.28, 0.5)  # drawn even when fixed, so other draws stay as they were
    accept = TISSUE_COVER_RANGE
    if fraction is not None:
        target, accept = fraction, (0.85 * fraction, 1.15 * fraction)
    n_pieces = int(rng.integers(1, 5))
    weights = rng.dirichlet(np.full(n_pieces, 2.0))
    scale = 1.0
    best: MultiPolygon | None = None
    for _ in range(_MAX_TRIES):
        pieces: list[Polygon] = []
        for w in weights:
            radius = scale * np.sqrt(target * slide_area * w / np.pi)
            aspect = rng.uniform(1.0, 2.2)
            half = radius * np.sqrt(aspect)
            cx = rng.uniform(min(half, width_px / 2), max(width_px - half, width_px / 2))
            cy = rng.uniform(min(half, height_px / 2), max(height_px - half, height_px / 2))
            pieces.append(random_blob(rng, (cx, cy), radius, aspect=aspect, roughness=0.22))
        tissue = as_clean_multipolygon(shapely.intersection(shapely.union_all(pieces), frame))
        cover = tissue.area / slide_area
        if accept[0] <= cover <= accept[1]:
            return tissue
        best = tissue
        scale *= float(np.sqrt(target / max(cover, 1e-3)))
    assert best is not None
    logger.warning("tissue cover %.2f outside %s after retries", best.area / slide_area, accept)
    return best


def _tumour(
    rng: np.random.Generator, tissue: MultiPolygon, burden_class: BurdenClass
) -> MultiPolygon:
    """Tumour regions inside the tissue whose measured share of tissue area fits the class."""
    if burden_class == "none":
        return MultiPolygon()
    lo, hi = BURDEN_LIMITS[burden_class]
    target = rng.uniform(*_BURDEN_TARGETS[burden_class])
    n_regions = int(rng.integers(1, 3 if burden_class == "micro" else 4))
    tissue_area = float(tissue.area)
    scale = 1.0
    for _ in range(_MAX_TRIES):
        blobs = []
        for _r in range(n_regions):
            radius = scale * np.sqrt(target * tissue_area / n_regions / np.pi)
            centre = _point_inside(rng, tissue, shapely.buffer(tissue, -radius))
            blobs.append(
                random_blob(rng, centre, radius, aspect=rng.uniform(1.0, 1.8), roughness=0.28)
            )
        tumour = as_clean_multipolygon(shapely.intersection(shapely.union_all(blobs), tissue))
        fraction = float(shapely.intersection(tumour, tissue).area) / tissue_area
        if lo < fraction and fraction < hi and burden_class_of(fraction) == burden_class:
            return tumour
        scale *= float(np.sqrt(target / max(fraction, 1e-6)))
    raise ConfigError(
        f"could not place {burden_class} tumour regions in {tissue_area:.0f} px² of tissue; "
        "the slide is probably too small for this burden class (try at least 256 x 256 px)"
    )


def _point_inside(
    rng: np.random.Generator,
    tissue: MultiPolygon,
    preferred: shapely.Geometry,
) -> tuple[float, float]:
    """A uniform random point of ``preferred`` (the tissue shrunk by the radius) or the tissue."""
    region = preferred if not preferred.is_empty else tissue
    x0, y0, x1, y1 = region.bounds
    for _ in range(100):
        xs = rng.uniform(x0, x1, 64)
        ys = rng.uniform(y0, y1, 64)
        inside = shapely.contains_xy(region, xs, ys)
        if inside.any():
            i = int(np.argmax(inside))
            return float(xs[i]), float(ys[i])
    point = region.representative_point()
    return float(point.x), float(point.y)
