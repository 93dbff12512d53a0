"""QuPath GeoJSON of predicted regions: a FeatureCollection of annotation polygons.

Coordinates are level-0 pixels with the origin at the top-left corner of the full-resolution
image, as QuPath expects. Each feature carries what QuPath reads (``objectType``,
``classification`` with a name and an RGB colour, ``measurements`` as a name -> number map,
a UUID ``id``) and SlideFleet's provenance as string ``metadata``. Ids are derived from the
slide, model, rule and region id, so re-exporting the same result gives the same file.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import Polygon
from shapely.geometry.polygon import orient

from engine.store.atomic import atomic_write_bytes
from engine.views.regions import SlideRegions
from engine.views.render import RGB

_NAMESPACE = uuid.UUID("5b0c7a53-52f4-4f0e-9a57-9d1f3c6f1e07")
COORDINATE_DECIMALS = 2


def _ring(coords: Any) -> list[list[float]]:
    return [
        [round(float(x), COORDINATE_DECIMALS), round(float(y), COORDINATE_DECIMALS)]
        for x, y in coords
    ]


def polygon_geometry(polygon: Polygon) -> dict[str, Any]:
    """GeoJSON Polygon of a shapely polygon (exterior counter-clockwise in x, y; holes kept)."""
    if not isinstance(polygon, Polygon) or polygon.is_empty:
        raise ValueError("a region geometry must be a non-empty Polygon")
    p = orient(polygon, sign=1.0)
    return {
        "type": "Polygon",
        "coordinates": [_ring(p.exterior.coords)] + [_ring(r.coords) for r in p.interiors],
    }


def region_feature(
    polygon: Polygon,
    *,
    class_name: str,
    colour: RGB,
    measurements: Mapping[str, float | None],
    name: str | None = None,
    feature_id: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One QuPath annotation Feature; measurements that are ``None`` or not finite are left out."""
    properties: dict[str, Any] = {
        "objectType": "annotation",
        "classification": {"name": class_name, "color": [int(c) for c in colour]},
        "isLocked": False,
        "measurements": {
            key: float(value)
            for key, value in measurements.items()
            if value is not None and math.isfinite(float(value))
        },
    }
    if name is not None:
        properties["name"] = name
    if metadata:
        properties["metadata"] = {str(k): str(v) for k, v in metadata.items()}
    feature: dict[str, Any] = {"type": "Feature"}
    if feature_id is not None:
        feature["id"] = feature_id
    feature["geometry"] = polygon_geometry(polygon)
    feature["properties"] = properties
    return feature


def feature_collection(features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": list(features)}


def regions_feature_collection(
    slide_regions: SlideRegions,
    *,
    slide_id: str,
    model_id: str,
    class_name: str,
    colour: RGB,
    rule_description: str,
    score_label: str = "score",
) -> dict[str, Any]:
    """The FeatureCollection of a slide's regions: area in µm² and mean / max score per region."""
    features = []
    for region in slide_regions.regions:
        polygon = slide_regions.polygons.get(region.region_id)
        if polygon is None or polygon.is_empty or not isinstance(polygon, Polygon):
            continue
        key = f"{slide_id}/{model_id}/{rule_description}/{region.region_id}"
        features.append(
            region_feature(
                polygon,
                class_name=class_name,
                colour=colour,
                name=f"{class_name} region {region.region_id}",
                feature_id=str(uuid.uuid5(_NAMESPACE, key)),
                measurements={
                    "Region area µm^2": region.area_um2,
                    f"Mean {score_label}": region.mean_score,
                    f"Max {score_label}": region.max_score,
                },
                metadata={
                    "slidefleet_slide_id": slide_id,
                    "slidefleet_model_id": model_id,
                    "slidefleet_region_id": str(region.region_id),
                    "slidefleet_rule": rule_description,
                },
            )
        )
    return feature_collection(features)


def write_geojson(collection: Mapping[str, Any], path: Path) -> Path:
    """Write a FeatureCollection atomically (ASCII JSON: µ is escaped)."""
    payload = json.dumps(collection, separators=(",", ":"), allow_nan=False).encode()
    atomic_write_bytes(Path(path), payload)
    return Path(path)


def collection_area_px2(collection: Mapping[str, Any]) -> float:
    """Total polygon area of a FeatureCollection in level-0 pixels² (for checks)."""
    return float(sum(shapely.geometry.shape(f["geometry"]).area for f in collection["features"]))
