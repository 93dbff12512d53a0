"""ASAP / CAMELYON16 XML: ``<ASAP_Annotations><Annotations><Annotation Type= PartOfGroup=>``."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from engine.annotations.shapes import (
    ParsedShapes,
    SourceShape,
    class_candidates,
    polygon_from_vertices,
)
from engine.errors import BadAnnotation

AREA_TYPES = frozenset({"polygon", "rectangle", "spline"})
"""ASAP types that enclose an area; spline control points are used as polygon vertices."""


def _number(text: str | None, *, what: str) -> float:
    if text is None:
        raise BadAnnotation(f"{what} is missing its X or Y attribute")
    # ASAP writes the locale's decimal separator: "1234,5" on many European machines.
    try:
        return float(text.strip().replace(",", "."))
    except ValueError:
        raise BadAnnotation(f"{what} has a coordinate that is not a number: {text!r}") from None


def _group_chain(group: str | None, parents: dict[str, str]) -> tuple[str, ...]:
    """The group, then its parent groups, as candidate class names."""
    chain: list[str] = []
    while group and group != "None" and group not in chain:
        chain.append(group)
        group = parents.get(group)
    if not chain:
        return class_candidates(None)
    return tuple(name for g in chain for name in class_candidates(g))


def parse_asap_xml(data: bytes) -> ParsedShapes:
    """Area shapes of an ASAP XML document; dots, point sets and measurements are skipped.

    Raises
    ------
    BadAnnotation
        The XML is malformed, is not an ASAP document, or a coordinate is not a number.
    """
    if b"<!ENTITY" in data:
        raise BadAnnotation("the XML declares entities; ASAP never writes them, refusing to expand")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise BadAnnotation(f"malformed XML ({exc}); re-export the annotation from ASAP") from None
    if root.tag != "ASAP_Annotations":
        raise BadAnnotation(
            f"XML root is <{root.tag}>, not <ASAP_Annotations>; only ASAP / CAMELYON16 XML is supported"
        )
    parents = {
        g.get("Name", ""): g.get("PartOfGroup", "None") for g in root.iter("Group") if g.get("Name")
    }
    parsed = ParsedShapes()
    for index, ann in enumerate(root.iter("Annotation")):
        name = ann.get("Name") or f"annotation #{index}"
        kind = (ann.get("Type") or "").strip()
        if kind.casefold() not in AREA_TYPES:
            parsed.skipped[kind or "untyped"] += 1
            continue
        coords = list(ann.iter("Coordinate"))
        try:
            coords.sort(key=lambda c: int(c.get("Order", "0")))
        except ValueError:
            raise BadAnnotation(f"annotation {name!r} has a non-integer coordinate Order") from None
        what = f"annotation {name!r}"
        vertices = [
            (_number(c.get("X"), what=what), _number(c.get("Y"), what=what)) for c in coords
        ]
        if len(vertices) < 3:
            parsed.skipped[f"{kind} with fewer than 3 vertices"] += 1
            continue
        parsed.shapes.append(
            SourceShape(
                name=name,
                classes=_group_chain(ann.get("PartOfGroup"), parents),
                geometry=polygon_from_vertices(vertices, what=what),
            )
        )
    return parsed
