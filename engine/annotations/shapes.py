"""What parsers return: area shapes in level-0 pixels with their candidate class names."""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from engine.annotations.classmap import UNCLASSIFIED
from engine.errors import BadAnnotation

logger = logging.getLogger(__name__)

Area: TypeAlias = Polygon | MultiPolygon


class AnnotationWarning(UserWarning):
    """Something in an annotation file was skipped (points, lines, unmapped classes)."""


@dataclass(frozen=True)
class SourceShape:
    """One area shape as the file describes it, before the class map is applied.

    Attributes
    ----------
    name
        The shape's own name in the file (for messages), e.g. ``"_0"`` or ``"Annotation 3"``.
    classes
        Candidate class names, most specific first (``("Tumor: Positive", "Tumor")``); a shape
        without a class has ``("unclassified",)``.
    geometry
        Polygon or MultiPolygon in level-0 pixels, possibly invalid (repaired later).
    """

    name: str
    classes: tuple[str, ...]
    geometry: Area


@dataclass
class ParsedShapes:
    """A parser's result: the area shapes, and a count of what was skipped by kind."""

    shapes: list[SourceShape] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)


def class_candidates(name: str | None) -> tuple[str, ...]:
    """Candidate names for a class; ``None``, ``""`` or ``"None"`` mean unclassified."""
    if name is None or not name.strip() or name.strip() == "None":
        return (UNCLASSIFIED,)
    name = name.strip()
    base = name.split(":", 1)[0].strip()
    return (name, base) if base and base != name else (name,)


def polygon_from_vertices(vertices: list[tuple[float, float]], *, what: str) -> Polygon:
    """A polygon from a vertex list; non-finite coordinates are a :class:`BadAnnotation`."""
    for x, y in vertices:
        if not (math.isfinite(x) and math.isfinite(y)):
            raise BadAnnotation(f"{what} has a non-finite coordinate ({x}, {y})")
    return Polygon(vertices)


def check_finite(geom: BaseGeometry, *, what: str) -> None:
    """Raise :class:`BadAnnotation` if ``geom`` has NaN or infinite coordinates."""
    coords = shapely.get_coordinates(geom)
    if coords.size and not np.isfinite(coords).all():
        raise BadAnnotation(f"{what} has non-finite coordinates")


def polygonal_parts(geom: BaseGeometry) -> list[Polygon]:
    """The non-empty polygons inside ``geom`` (drops lines and points left by ``make_valid``)."""
    out: list[Polygon] = []
    for part in shapely.get_parts(geom):
        if isinstance(part, Polygon):
            if not part.is_empty and part.area > 0:
                out.append(part)
        elif part.geom_type in ("MultiPolygon", "GeometryCollection"):
            out.extend(polygonal_parts(part))
    return out


def repair(geom: BaseGeometry, *, what: str) -> tuple[list[Polygon], bool]:
    """Valid polygons covering ``geom``; the flag says whether a repair was needed.

    Self-intersecting outlines (a bow-tie, a ring that crosses itself) are common in hand-drawn
    annotations; ``shapely.make_valid`` splits them into valid parts instead of failing.
    """
    geom = shapely.force_2d(geom)
    if geom.is_valid:
        return polygonal_parts(geom), False
    reason = shapely.is_valid_reason(geom)
    fixed = shapely.make_valid(geom)
    logger.info("repaired invalid polygon %s (%s)", what, reason)
    return polygonal_parts(fixed), True
