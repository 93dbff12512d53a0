"""What a synthetic slide is: a small, picklable description from which every pixel follows."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np
import shapely
from shapely.geometry import MultiPolygon

from engine.synth.raster import EdgeTable

BurdenClass = Literal["none", "micro", "small", "macro"]
"""Tumour burden strata (share of tissue area): none, micro < 0.4 %, small 0.4–2 %, macro > 2 %."""

BURDEN_CLASSES: tuple[BurdenClass, ...] = ("none", "micro", "small", "macro")

# Reference stain vectors in optical density (rows: R, G, B absorbance), as in Macenko's
# reference H&E matrix; per-slide variation perturbs these.
_REF_HAEMATOXYLIN_OD = (0.5626, 0.7201, 0.4062)
_REF_EOSIN_OD = (0.2159, 0.8012, 0.5581)


@dataclass(frozen=True)
class StainParams:
    """Per-slide stain and scanner appearance (Beer–Lambert model).

    Parameters
    ----------
    haematoxylin_od, eosin_od
        Unit optical-density vectors (R, G, B) of the two stains.
    haematoxylin_scale, eosin_scale
        Stain strength multipliers (staining protocol variation).
    illuminant
        Light-source intensity per channel, 0–255 (scanner brightness and tint).
    """

    haematoxylin_od: tuple[float, float, float] = _REF_HAEMATOXYLIN_OD
    eosin_od: tuple[float, float, float] = _REF_EOSIN_OD
    haematoxylin_scale: float = 1.0
    eosin_scale: float = 1.0
    illuminant: tuple[float, float, float] = (246.0, 245.0, 247.0)

    @classmethod
    def sample(cls, rng: np.random.Generator) -> StainParams:
        """Draw a plausible scanner/stain variation around the reference."""

        def _vector(ref: tuple[float, float, float]) -> tuple[float, float, float]:
            v = np.clip(np.asarray(ref) + rng.normal(0.0, 0.04, 3), 0.05, None)
            v = v / np.linalg.norm(v)
            return (float(v[0]), float(v[1]), float(v[2]))

        brightness = rng.uniform(0.93, 1.0) * 250.0
        tint = rng.normal(0.0, 0.012, 3)
        illuminant = np.clip(brightness * (1.0 + tint), 200.0, 255.0)
        return cls(
            haematoxylin_od=_vector(_REF_HAEMATOXYLIN_OD),
            eosin_od=_vector(_REF_EOSIN_OD),
            haematoxylin_scale=float(rng.uniform(0.8, 1.25)),
            eosin_scale=float(rng.uniform(0.75, 1.3)),
            illuminant=(float(illuminant[0]), float(illuminant[1]), float(illuminant[2])),
        )


@dataclass(frozen=True)
class SlideSpec:
    """A synthetic slide: geometry in level-0 pixels plus the seeds and stain of its texture.

    Parameters
    ----------
    slide_id
        Identifier used for file names and the manifest.
    width_px, height_px
        Level-0 size.
    mpp
        Level-0 microns per pixel.
    seed
        Seed of the texture noise (pixels are a pure function of spec and coordinates).
    tissue
        Tissue outline, level-0 pixels, no holes.
    tumour
        Tumour outline, level-0 pixels, inside ``tissue`` (empty for a normal slide).
    stain
        Stain and scanner appearance.
    burden_class
        Intended burden stratum; ``tumour_fraction`` is what the polygons achieve.
    """

    slide_id: str
    width_px: int
    height_px: int
    mpp: float
    seed: int
    tissue: MultiPolygon
    tumour: MultiPolygon
    stain: StainParams = field(default_factory=StainParams)
    burden_class: BurdenClass = "none"

    @property
    def tissue_area_um2(self) -> float:
        """Tissue area in µm²."""
        return float(self.tissue.area) * self.mpp**2

    @property
    def tumour_area_um2(self) -> float:
        """Tumour area (inside tissue) in µm²."""
        return float(shapely.intersection(self.tumour, self.tissue).area) * self.mpp**2

    @property
    def tumour_fraction(self) -> float:
        """Tumour area over tissue area, measured on the polygons (0 when there is no tissue)."""
        tissue = float(self.tissue.area)
        return (
            0.0
            if tissue == 0
            else float(shapely.intersection(self.tumour, self.tissue).area) / tissue
        )

    @cached_property
    def tissue_edges(self) -> EdgeTable:
        """Edges of the tissue outline, for fast rasterisation."""
        return EdgeTable.from_geometry(self.tissue)

    @cached_property
    def tumour_edges(self) -> EdgeTable:
        """Edges of the tumour outline, for fast rasterisation."""
        return EdgeTable.from_geometry(self.tumour)
