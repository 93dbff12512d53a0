"""Ground truth files: CAMELYON16 / ASAP XML and QuPath GeoJSON, in level-0 pixels."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import shapely
from shapely.geometry import MultiPolygon, Polygon

TUMOUR_CLASS = "Tumor"
"""Class name used in both formats (CAMELYON16 group name, QuPath classification)."""

_TUMOUR_COLOUR_HEX = "#F4FA58"
_TUMOUR_COLOUR_RGB = [200, 0, 0]


def _polygons(geometry: MultiPolygon) -> list[Polygon]:
    return [p for p in shapely.get_parts(geometry) if isinstance(p, Polygon) and not p.is_empty]


def _fmt(value: float) -> str:
    """Coordinates are on a 0.25 px grid: print them exactly and briefly."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def write_asap_xml(tumour: MultiPolygon, path: Path) -> Path:
    """Write tumour polygons as an ASAP XML file (CAMELYON16 layout, group ``Tumor``).

    A slide without tumour gets a file with no annotations: empty ground truth is explicit.
    """
    root = ET.Element("ASAP_Annotations")
    annotations = ET.SubElement(root, "Annotations")
    for i, polygon in enumerate(_polygons(tumour)):
        ann = ET.SubElement(
            annotations,
            "Annotation",
            Name=f"Annotation {i}",
            Type="Polygon",
            PartOfGroup=TUMOUR_CLASS,
            Color=_TUMOUR_COLOUR_HEX,
        )
        coords = ET.SubElement(ann, "Coordinates")
        for order, (x, y) in enumerate(polygon.exterior.coords[:-1]):
            ET.SubElement(coords, "Coordinate", Order=str(order), X=_fmt(x), Y=_fmt(y))
    groups = ET.SubElement(root, "AnnotationGroups")
    group = ET.SubElement(
        groups, "Group", Name=TUMOUR_CLASS, PartOfGroup="None", Color=_TUMOUR_COLOUR_HEX
    )
    ET.SubElement(group, "Attributes")
    ET.indent(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


def write_qupath_geojson(tumour: MultiPolygon, path: Path) -> Path:
    """Write tumour polygons as a QuPath GeoJSON FeatureCollection of ``Polygon`` features.

    Each feature is an annotation with ``properties.classification.name == "Tumor"``;
    coordinates are level-0 pixels, rings closed.
    """
    features = []
    for i, polygon in enumerate(_polygons(tumour)):
        rings = [polygon.exterior, *polygon.interiors]
        features.append(
            {
                "type": "Feature",
                "id": f"tumor-{i}",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [
                        [[float(x), float(y)] for x, y in ring.coords] for ring in rings
                    ],
                },
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": TUMOUR_CLASS, "color": _TUMOUR_COLOUR_RGB},
                },
            }
        )
    collection = {"type": "FeatureCollection", "features": features}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(collection, separators=(",", ":")) + "\n", encoding="utf-8")
    return path
