"""NCRF CAMELYON JSON: ``{"positive": [{"name", "vertices": [[x, y], ...]}], "negative": [...]}``.

Shapes take the list they are in as their class name, so a class map says what ``positive`` and
``negative`` mean (the ``camelyon16`` preset: tumour and exclusion).
"""

from __future__ import annotations

from typing import Any

from engine.annotations.shapes import ParsedShapes, SourceShape, polygon_from_vertices
from engine.errors import BadAnnotation

LISTS = ("positive", "negative")


def is_ncrf(obj: Any) -> bool:
    """Whether a decoded JSON value looks like an NCRF annotation."""
    return isinstance(obj, dict) and "type" not in obj and any(k in obj for k in LISTS)


def parse_ncrf_json(obj: Any) -> ParsedShapes:
    """Area shapes of a decoded NCRF JSON value.

    Raises
    ------
    BadAnnotation
        The value is not an NCRF object or a polygon's vertices are malformed.
    """
    if not is_ncrf(obj):
        raise BadAnnotation("JSON is not an NCRF annotation (no 'positive' / 'negative' lists)")
    parsed = ParsedShapes()
    for key in LISTS:
        items = obj.get(key, [])
        if not isinstance(items, list):
            raise BadAnnotation(f"NCRF '{key}' is not a list")
        for index, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("vertices"), list):
                raise BadAnnotation(f"NCRF '{key}' item #{index} has no 'vertices' list")
            name = str(item.get("name") or f"{key} #{index}")
            what = f"NCRF {key} polygon {name!r}"
            try:
                vertices = [(float(x), float(y)) for x, y in item["vertices"]]
            except (TypeError, ValueError):
                raise BadAnnotation(
                    f"{what} has vertices that are not [x, y] number pairs"
                ) from None
            if len(vertices) < 3:
                parsed.skipped[f"{key} polygon with fewer than 3 vertices"] += 1
                continue
            parsed.shapes.append(
                SourceShape(
                    name=name, classes=(key,), geometry=polygon_from_vertices(vertices, what=what)
                )
            )
    return parsed
