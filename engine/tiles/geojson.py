"""Tile-level QuPath GeoJSON: one detection per tile, its probabilities as measurements."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from engine.views.render import RGB

_NAMESPACE = uuid.UUID("0d6f1f1e-9d7e-4f43-8a59-3c1f0e1f5a21")
_PALETTE: tuple[RGB, ...] = (
    (31, 119, 180),
    (214, 39, 40),
    (44, 160, 44),
    (255, 127, 14),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
)


def tile_features(
    rows: Sequence[Mapping[str, Any]], class_names: Sequence[str], *, model_id: str
) -> dict[str, Any]:
    """FeatureCollection of ``tables/tiles`` rows of one slide.

    Each tile is a QuPath *detection* (a square polygon in level-0 px) classified as its most
    probable class, with ``measurements`` holding every class probability and the tissue
    fraction, as QuPath shows them in its measurement table.
    """
    features = []
    for row in rows:
        x, y, w, h = (int(row[k]) for k in ("x", "y", "width", "height"))
        probabilities = {c: row.get(f"prob_{c}") for c in class_names}
        measurements: dict[str, float] = {
            f"prob_{c}": float(p) for c, p in probabilities.items() if p is not None
        }
        measurements["tissue_fraction"] = float(row["tissue_fraction"])
        properties: dict[str, Any] = {
            "objectType": "detection",
            "isLocked": True,
            "measurements": measurements,
        }
        if measurements and class_names:
            best = max(
                class_names,
                key=lambda c: probabilities[c] if probabilities[c] is not None else -1.0,
            )
            colour = _PALETTE[list(class_names).index(best) % len(_PALETTE)]
            properties["classification"] = {"name": best, "color": list(colour)}
        key = f"{row['slide_id']}/{model_id}/{row['row']}/{row['col']}"
        features.append(
            {
                "type": "Feature",
                "id": str(uuid.uuid5(_NAMESPACE, key)),
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]],
                },
                "properties": properties,
            }
        )
    return {"type": "FeatureCollection", "features": features}
