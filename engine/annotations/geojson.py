"""QuPath GeoJSON: a FeatureCollection, a bare Feature, a list of Features, or a bare geometry.

QuPath writes all of these depending on version and export path. Ellipses, rectangles and brush
strokes are exported as polygons already. The class is ``properties.classification.name`` (0.2+),
``classification.names`` joined with ": " (derived classes), or a plain string (old exports).
"""

from __future__ import annotations

from typing import Any

import shapely.geometry
from shapely.errors import GEOSException
from shapely.geometry import MultiPolygon, Polygon

from engine.annotations.shapes import ParsedShapes, SourceShape, check_finite, class_candidates
from engine.errors import BadAnnotation

GEOMETRY_TYPES = frozenset(
    {
        "Point",
        "MultiPoint",
        "LineString",
        "MultiLineString",
        "Polygon",
        "MultiPolygon",
        "GeometryCollection",
    }
)
GEOJSON_TYPES = GEOMETRY_TYPES | {"Feature", "FeatureCollection"}


def is_geojson(obj: Any) -> bool:
    """Whether a decoded JSON value looks like GeoJSON (an empty list counts: no features)."""
    if isinstance(obj, list):
        return all(isinstance(item, dict) and item.get("type") in GEOJSON_TYPES for item in obj)
    return isinstance(obj, dict) and obj.get("type") in GEOJSON_TYPES


def _class_name(properties: dict[str, Any]) -> str | None:
    cls = properties.get("classification")
    if isinstance(cls, str):
        return cls
    if isinstance(cls, dict):
        if isinstance(cls.get("name"), str):
            return str(cls["name"])
        names = cls.get("names")
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            return ": ".join(names)
    return None


def _add_geometry(
    parsed: ParsedShapes, geometry: Any, *, name: str, classes: tuple[str, ...]
) -> None:
    if geometry is None:
        parsed.skipped["feature without geometry"] += 1
        return
    if not isinstance(geometry, dict) or geometry.get("type") not in GEOMETRY_TYPES:
        raise BadAnnotation(f"{name} has an invalid GeoJSON geometry")
    kind = geometry["type"]
    if kind == "GeometryCollection":
        members = geometry.get("geometries")
        if not isinstance(members, list):
            raise BadAnnotation(f"{name}: GeometryCollection without a 'geometries' list")
        for member in members:
            _add_geometry(parsed, member, name=name, classes=classes)
        return
    if kind not in ("Polygon", "MultiPolygon"):
        parsed.skipped[kind] += 1
        return
    try:
        geom = shapely.geometry.shape(geometry)
    except (GEOSException, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise BadAnnotation(f"{name} has malformed {kind} coordinates ({exc})") from None
    if not isinstance(geom, Polygon | MultiPolygon):
        raise BadAnnotation(f"{name}: {kind} coordinates do not describe a {kind}")
    check_finite(geom, what=name)
    if geom.is_empty:
        parsed.skipped[f"empty {kind}"] += 1
        return
    parsed.shapes.append(SourceShape(name=name, classes=classes, geometry=geom))


def _add_feature(parsed: ParsedShapes, feature: Any, index: int) -> None:
    if not isinstance(feature, dict):
        raise BadAnnotation(f"feature #{index} is not a JSON object")
    if feature.get("type") in GEOMETRY_TYPES:
        _add_geometry(parsed, feature, name=f"geometry #{index}", classes=class_candidates(None))
        return
    if feature.get("type") != "Feature":
        raise BadAnnotation(f"item #{index} has type {feature.get('type')!r}, expected 'Feature'")
    properties = feature.get("properties") or {}
    if not isinstance(properties, dict):
        raise BadAnnotation(f"feature #{index} has 'properties' that is not an object")
    label = properties.get("name")
    name = f"feature #{index}" + (f" ({label!r})" if isinstance(label, str) and label else "")
    _add_geometry(
        parsed,
        feature.get("geometry"),
        name=name,
        classes=class_candidates(_class_name(properties)),
    )


def parse_geojson(obj: Any) -> ParsedShapes:
    """Area shapes of a decoded GeoJSON value; points and lines are counted as skipped.

    Raises
    ------
    BadAnnotation
        The value is not GeoJSON, or a geometry is malformed.
    """
    if isinstance(obj, list):
        features: list[Any] = obj
    elif isinstance(obj, dict) and obj.get("type") == "FeatureCollection":
        features = obj.get("features")  # type: ignore[assignment]
        if not isinstance(features, list):
            raise BadAnnotation("FeatureCollection without a 'features' list")
    elif is_geojson(obj):
        features = [obj]
    else:
        raise BadAnnotation("JSON is not GeoJSON (no Feature, FeatureCollection or geometry)")
    parsed = ParsedShapes()
    for index, feature in enumerate(features):
        _add_feature(parsed, feature, index)
    return parsed
