"""A slide's ground truth, ready to rasterise block by block.

Two kinds share one contract (:class:`Annotation`): polygons in level-0 pixels
(:class:`PolygonAnnotation`, from ASAP XML, GeoJSON, NCRF JSON) and a small label raster aligned
with level 0 (:class:`MaskAnnotation`, from PNG / TIFF label masks). Both are built from parsed
data by pure functions here; reading files is :mod:`engine.annotations.load`'s job.

Fill order: labels are drawn in ascending value, so where shapes of two classes overlap the
higher label wins; holes (exclusions) are cut back to background last.
"""

from __future__ import annotations

import logging
import math
import warnings
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Mapping, Sequence
from functools import cached_property

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from engine.annotations.classmap import HOLE, ClassMap, Target
from engine.annotations.rasterise import PolygonIndex, pixel_centres
from engine.annotations.shapes import AnnotationWarning, SourceShape, polygonal_parts, repair
from engine.errors import BadAnnotation

logger = logging.getLogger(__name__)

BOUNDS_TOLERANCE = 0.01
"""Shapes may overhang the slide by this fraction of its width / height (drawing slop)."""

MASK_ASPECT_TOLERANCE = 0.02
"""A label mask's downsample in x and y may differ by this fraction (rounding of its size)."""


class Annotation(ABC):
    """Ground truth of one slide: labels for any block, and areas per class."""

    source: str
    class_map: ClassMap | None

    @abstractmethod
    def rasterise_block(
        self, x0_px: float, y0_px: float, width_px: int, height_px: int, downsample: float
    ) -> NDArray[np.uint8]:
        """Labels of a block, shape ``(height_px, width_px)``, sampled at output pixel centres.

        Parameters
        ----------
        x0_px, y0_px
            Level-0 origin of the block's first pixel.
        width_px, height_px
            Block size in output (downsampled) pixels.
        downsample
            Level-0 pixels per output pixel; pixel ``(i, j)`` covers level-0
            ``[x0 + j*ds, x0 + (j+1)*ds)`` by ``[y0 + i*ds, y0 + (i+1)*ds)``.
        """

    @abstractmethod
    def class_areas_px2(self) -> dict[int, float]:
        """Area per label present, in level-0 pixels², after overlaps and holes."""

    def class_areas_um2(self, mpp: float) -> dict[int, float]:
        """Area per label present, in µm², for a slide of ``mpp`` µm per level-0 pixel."""
        if not (math.isfinite(mpp) and mpp > 0):
            raise ValueError(f"mpp must be a positive number, got {mpp}")
        return {label: area * mpp * mpp for label, area in self.class_areas_px2().items()}

    def area_um2(self, mpp: float) -> float:
        """Total annotated (non-background) area in µm²."""
        return sum(self.class_areas_um2(mpp).values())

    @property
    def classes_present(self) -> tuple[int, ...]:
        """Labels with a non-zero area, ascending."""
        return tuple(sorted(label for label, area in self.class_areas_px2().items() if area > 0))

    @property
    def is_empty(self) -> bool:
        """True when the annotation rasterises to background everywhere."""
        return not self.classes_present


def _check_block(width_px: int, height_px: int, downsample: float) -> None:
    if width_px < 0 or height_px < 0:
        raise ValueError(f"block size must be >= 0, got {width_px} x {height_px}")
    if not (math.isfinite(downsample) and downsample > 0):
        raise ValueError(f"downsample must be a positive number, got {downsample}")


def _as_parts(geom: BaseGeometry | Sequence[Polygon] | None) -> list[Polygon]:
    """Interior-disjoint polygons covering ``geom`` (overlapping inputs are unioned)."""
    if geom is None:
        return []
    polygons = (
        [p for g in geom for p in polygonal_parts(g)]
        if isinstance(geom, Sequence)
        else polygonal_parts(geom)
    )
    if len(polygons) <= 1:
        return polygons
    return polygonal_parts(shapely.union_all(polygons))


class PolygonAnnotation(Annotation):
    """Polygons per label, plus holes; fills blocks through an STRtree so empty blocks are cheap.

    Parameters
    ----------
    layers
        Label (1..255) -> valid polygonal geometry (or list of polygons) in level-0 pixels.
    holes
        Exclusions cut back to background after every label is drawn.
    class_map, source
        Recorded for provenance and messages.
    """

    def __init__(
        self,
        layers: Mapping[int, BaseGeometry | Sequence[Polygon]],
        holes: BaseGeometry | Sequence[Polygon] | None = None,
        *,
        class_map: ClassMap | None = None,
        source: str = "<memory>",
    ) -> None:
        self.source = source
        self.class_map = class_map
        self._layers: dict[int, list[Polygon]] = {}
        for label, geom in sorted(layers.items()):
            if not 1 <= label <= 255:
                raise ValueError(f"labels must be 1..255 to fit uint8, got {label}")
            parts = _as_parts(geom)
            if parts:
                self._layers[label] = parts
        self._holes = _as_parts(holes)
        self._indexes = {label: PolygonIndex(parts) for label, parts in self._layers.items()}
        self._hole_index = PolygonIndex(self._holes) if self._holes else None

    @property
    def layers(self) -> dict[int, list[Polygon]]:
        """Label -> interior-disjoint polygons, before holes and overlaps are applied."""
        return dict(self._layers)

    @property
    def holes(self) -> list[Polygon]:
        """Exclusion polygons."""
        return list(self._holes)

    def rasterise_block(
        self, x0_px: float, y0_px: float, width_px: int, height_px: int, downsample: float
    ) -> NDArray[np.uint8]:
        _check_block(width_px, height_px, downsample)
        out = np.zeros((height_px, width_px), dtype=np.uint8)
        if not self._indexes or width_px == 0 or height_px == 0:
            return out
        cx = pixel_centres(x0_px, width_px, downsample)
        cy = pixel_centres(y0_px, height_px, downsample)
        drawn = False
        for label, index in self._indexes.items():  # ascending: higher labels overwrite
            inside = index.fill(cx, cy)
            if inside is not None:
                out[inside] = label
                drawn = True
        if drawn and self._hole_index is not None:
            inside = self._hole_index.fill(cx, cy)
            if inside is not None:
                out[inside] = 0
        return out

    @cached_property
    def _areas(self) -> dict[int, float]:
        areas: dict[int, float] = {}
        covered: BaseGeometry = shapely.union_all(self._holes)
        for label in sorted(self._layers, reverse=True):
            geom = shapely.union_all(self._layers[label])
            areas[label] = float(shapely.difference(geom, covered).area)
            covered = shapely.union(covered, geom)
        return {label: areas[label] for label in sorted(areas) if areas[label] > 0}

    def class_areas_px2(self) -> dict[int, float]:
        return dict(self._areas)

    def __repr__(self) -> str:
        counts = {label: len(parts) for label, parts in self._layers.items()}
        return f"PolygonAnnotation({self.source!r}, polygons per label={counts}, holes={len(self._holes)})"


def check_bounds(
    shapes: Sequence[SourceShape],
    *,
    slide_width_px: int,
    slide_height_px: int,
    tolerance: float = BOUNDS_TOLERANCE,
) -> None:
    """Raise :class:`BadAnnotation` if a shape lies outside the slide or overhangs it too far.

    Both usually mean the file belongs to another slide or uses another level's coordinates.
    """
    if slide_width_px <= 0 or slide_height_px <= 0:
        raise ValueError(f"slide size must be positive, got {slide_width_px} x {slide_height_px}")
    tol_x, tol_y = tolerance * slide_width_px, tolerance * slide_height_px
    outside: list[str] = []
    overhang: list[str] = []
    for shape in shapes:
        x_min, y_min, x_max, y_max = shape.geometry.bounds
        where = f"{shape.name!r} spans x {x_min:.0f}..{x_max:.0f}, y {y_min:.0f}..{y_max:.0f}"
        if x_max <= 0 or y_max <= 0 or x_min >= slide_width_px or y_min >= slide_height_px:
            outside.append(where)
        elif (
            x_min < -tol_x
            or y_min < -tol_y
            or x_max > slide_width_px + tol_x
            or y_max > slide_height_px + tol_y
        ):
            overhang.append(where)
    if not outside and not overhang:
        return
    problems = []
    if outside:
        problems.append(f"{len(outside)} shape(s) lie entirely outside it (e.g. {outside[0]})")
    if overhang:
        problems.append(
            f"{len(overhang)} shape(s) extend more than {tolerance:.0%} beyond its edge "
            f"(e.g. {overhang[0]})"
        )
    raise BadAnnotation(
        f"annotation does not fit the slide ({slide_width_px} x {slide_height_px} px at level 0): "
        + "; ".join(problems)
        + ". The file probably belongs to another slide, or its coordinates are not level-0 "
        "pixels (another pyramid level, or µm); check the manifest's annotation column."
    )


def _clip(polygons: list[Polygon], slide: Polygon) -> list[Polygon]:
    """Polygons cut to the slide, so areas count only what can be rasterised."""
    out: list[Polygon] = []
    for polygon in polygons:
        if slide.contains(polygon):
            out.append(polygon)
        else:
            out.extend(polygonal_parts(shapely.intersection(polygon, slide)))
    return out


def build_polygon_annotation(
    shapes: Sequence[SourceShape],
    class_map: ClassMap,
    *,
    slide_width_px: int,
    slide_height_px: int,
    source: str = "<memory>",
) -> PolygonAnnotation:
    """Apply the class map to parsed shapes, repair invalid ones, and check they fit the slide.

    Shapes whose class the map does not know are ignored with an :class:`AnnotationWarning`.
    Self-intersecting shapes are repaired with ``shapely.make_valid`` and logged. Shapes that
    overhang the slide within the tolerance are cut to it.

    Raises
    ------
    BadAnnotation
        A shape lies outside the slide or overhangs it by more than :data:`BOUNDS_TOLERANCE`.
    """
    check_bounds(shapes, slide_width_px=slide_width_px, slide_height_px=slide_height_px)
    slide = shapely.box(0, 0, slide_width_px, slide_height_px)
    by_target: dict[Target, list[Polygon]] = defaultdict(list)
    unmapped: dict[str, int] = defaultdict(int)
    repaired = 0
    for shape in shapes:
        target = class_map.target_for_names(shape.classes)
        if target is None:
            unmapped[shape.classes[0]] += 1
            continue
        if target == 0:
            continue
        parts, was_repaired = repair(shape.geometry, what=f"{shape.name!r} in {source}")
        repaired += was_repaired
        by_target[target].extend(_clip(parts, slide))
    if repaired:
        logger.warning(
            "%s: repaired %d self-intersecting or otherwise invalid polygon(s) with make_valid",
            source,
            repaired,
        )
    if unmapped:
        listed = ", ".join(f"{name!r} ({n})" for name, n in sorted(unmapped.items()))
        warnings.warn(
            f"{source}: ignored shapes whose class is not in class map {class_map.name!r}: "
            f"{listed}",
            AnnotationWarning,
            stacklevel=2,
        )
    holes = by_target.pop(HOLE, [])
    layers = {int(t): polys for t, polys in by_target.items()}
    annotation = PolygonAnnotation(layers, holes, class_map=class_map, source=source)
    if not layers:
        logger.info("%s: no area shapes of a mapped class; the slide is all background", source)
    return annotation


class MaskAnnotation(Annotation):
    """A label raster (already mapped to output labels) aligned with level 0 at a downsample.

    Parameters
    ----------
    labels
        2-D uint8 output labels; mask pixel ``(r, c)`` covers level-0
        ``[ox + c*downsample_x, ox + (c+1)*downsample_x)`` by the same in y.
    downsample_x, downsample_y
        Level-0 pixels per mask pixel.
    origin_x_px, origin_y_px
        Level-0 position of the mask's top-left corner (0 for a whole-slide mask; the ROI's
        corner for a region mask). Outside the mask is background.
    """

    def __init__(
        self,
        labels: NDArray[np.uint8],
        *,
        downsample_x: float,
        downsample_y: float,
        origin_x_px: int = 0,
        origin_y_px: int = 0,
        class_map: ClassMap | None = None,
        source: str = "<memory>",
    ) -> None:
        if labels.ndim != 2 or labels.dtype != np.uint8:
            raise ValueError(f"labels must be a 2-D uint8 array, got {labels.dtype} {labels.shape}")
        if not (downsample_x > 0 and downsample_y > 0):
            raise ValueError("mask downsample must be positive")
        self.labels = labels
        self.downsample_x = float(downsample_x)
        self.downsample_y = float(downsample_y)
        self.origin_x_px = origin_x_px
        self.origin_y_px = origin_y_px
        self.class_map = class_map
        self.source = source

    def rasterise_block(
        self, x0_px: float, y0_px: float, width_px: int, height_px: int, downsample: float
    ) -> NDArray[np.uint8]:
        _check_block(width_px, height_px, downsample)
        out = np.zeros((height_px, width_px), dtype=np.uint8)
        mask_h, mask_w = self.labels.shape
        cx = pixel_centres(x0_px - self.origin_x_px, width_px, downsample)
        cy = pixel_centres(y0_px - self.origin_y_px, height_px, downsample)
        cols = np.floor(cx / self.downsample_x)
        rows = np.floor(cy / self.downsample_y)
        col_ok = (cols >= 0) & (cols < mask_w)
        row_ok = (rows >= 0) & (rows < mask_h)
        if not col_ok.any() or not row_ok.any():
            return out
        out[np.ix_(row_ok, col_ok)] = self.labels[
            np.ix_(rows[row_ok].astype(np.intp), cols[col_ok].astype(np.intp))
        ]
        return out

    @cached_property
    def _areas(self) -> dict[int, float]:
        counts = np.bincount(self.labels.ravel(), minlength=256)
        pixel_area = self.downsample_x * self.downsample_y
        return {int(v): float(counts[v]) * pixel_area for v in np.flatnonzero(counts) if v > 0}

    def class_areas_px2(self) -> dict[int, float]:
        return dict(self._areas)

    def __repr__(self) -> str:
        return (
            f"MaskAnnotation({self.source!r}, shape={self.labels.shape}, "
            f"downsample=({self.downsample_x:g}, {self.downsample_y:g}), "
            f"origin=({self.origin_x_px}, {self.origin_y_px}))"
        )


def infer_mask_downsample(
    mask_width_px: int,
    mask_height_px: int,
    *,
    slide_width_px: int,
    slide_height_px: int,
    tolerance: float = MASK_ASPECT_TOLERANCE,
) -> tuple[float, float]:
    """Level-0 pixels per mask pixel in x and y, from the mask and slide sizes.

    A near-integer factor (within ``tolerance`` on both axes, as when the mask size was rounded
    up or down) snaps to that integer; otherwise each axis uses slide / mask exactly.

    Raises
    ------
    BadAnnotation
        The aspect ratios differ by more than ``tolerance``, or the mask is larger than the slide.
    """
    if mask_width_px <= 0 or mask_height_px <= 0:
        raise BadAnnotation("the label mask image is empty (zero width or height)")
    kx = slide_width_px / mask_width_px
    ky = slide_height_px / mask_height_px
    fit = (
        f"label mask {mask_width_px} x {mask_height_px} px does not fit the slide "
        f"({slide_width_px} x {slide_height_px} px at level 0)"
    )
    if abs(kx - ky) > tolerance * max(kx, ky):
        raise BadAnnotation(
            f"{fit}: its aspect ratio differs (downsample {kx:.3f} in x, {ky:.3f} in y). "
            "It probably belongs to another slide, or is a crop of a region rather than the "
            "whole slide."
        )
    if max(kx, ky) < 1 - tolerance:
        raise BadAnnotation(
            f"{fit}: the mask is larger than the slide; it belongs to another slide"
        )
    k = max(1, round((kx + ky) / 2))
    if abs(kx - k) <= tolerance * k and abs(ky - k) <= tolerance * k:
        return float(k), float(k)
    return kx, ky


def build_mask_annotation(
    mask: NDArray[np.integer],
    class_map: ClassMap,
    *,
    slide_width_px: int,
    slide_height_px: int,
    roi_origin_px: tuple[int, int] | None = None,
    source: str = "<memory>",
) -> MaskAnnotation:
    """Map a label-mask image's values through the class map and align it with level 0.

    A whole-slide mask's downsample is inferred from the slide size
    (:func:`infer_mask_downsample`). A region mask (``roi_origin_px`` given: its level-0
    top-left corner) is at level-0 resolution and must lie within the slide.
    Non-zero values the map does not know are background, with an :class:`AnnotationWarning`.
    """
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise BadAnnotation(
            f"label mask must be a 2-D integer image, got {mask.dtype} {mask.shape}"
        )
    if roi_origin_px is None:
        origin = (0, 0)
        downsample_x, downsample_y = infer_mask_downsample(
            mask.shape[1],
            mask.shape[0],
            slide_width_px=slide_width_px,
            slide_height_px=slide_height_px,
        )
    else:
        origin = roi_origin_px
        downsample_x = downsample_y = 1.0
        check_bounds(
            [
                SourceShape(
                    f"region mask at {origin}",
                    (),
                    shapely.box(*origin, origin[0] + mask.shape[1], origin[1] + mask.shape[0]),
                )
            ],
            slide_width_px=slide_width_px,
            slide_height_px=slide_height_px,
        )
    small = mask.dtype.kind == "u" and mask.dtype.itemsize <= 2
    # Small unsigned masks use a direct lookup table: no sort of a possibly large mask.
    values = np.flatnonzero(np.bincount(mask.ravel())) if small else np.unique(mask)
    lut = np.zeros(values.size, dtype=np.uint8)
    unmapped: list[int] = []
    for i, value in enumerate(values.tolist()):
        target = class_map.target_for_value(int(value))
        if target is None:
            unmapped.append(int(value))
        elif target != HOLE:
            lut[i] = int(target)
    if unmapped:
        warnings.warn(
            f"{source}: mask values {unmapped} are not in class map {class_map.name!r}; "
            "they are background",
            AnnotationWarning,
            stacklevel=2,
        )
    if small:
        table = np.zeros(int(values[-1]) + 1 if values.size else 1, dtype=np.uint8)
        table[values] = lut
        labels = table[mask]
    else:
        labels = lut[np.searchsorted(values, mask)]
    logger.debug("%s: label mask at downsample (%g, %g)", source, downsample_x, downsample_y)
    return MaskAnnotation(
        labels,
        downsample_x=downsample_x,
        downsample_y=downsample_y,
        origin_x_px=origin[0],
        origin_y_px=origin[1],
        class_map=class_map,
        source=source,
    )
