"""``slidefleet tiles``: ``tables/tiles`` and tile GeoJSON for a patch classifier or an extractor.

One Ray task per slide reads the committed output of one model: a patch classifier's score map
(one output pixel per tile: the tile's class probabilities) or an extractor's features store
(tiles without probabilities). Each scored tile becomes a row (slide_id, grid row/col, level-0
x/y/width/height, tissue fraction, ``prob_<class>`` per class) and a QuPath detection in
``views/<model_id>/<slide_id>.tiles.geojson``, beside the region GeoJSON.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
import zarr

from engine.cluster import ensure_ray
from engine.errors import ConfigError, SlideFleetError, StoreIncomplete
from engine.features.store import read_features
from engine.features.tiles import tile_boxes_level0
from engine.infer.reading import recorded_mpp_tolerance, slide_tile_geometry, tiles_tissue_fraction
from engine.models import ModelCard, ModelRegistry
from engine.runs import new_run_id
from engine.store import FleetLayout, read_completion
from engine.store.slide_store import SlideStore
from engine.tables import FailureRecord, write_failures, write_table_part
from engine.tables.slide_level_schemas import TILES_SCHEMA, class_column, with_class_columns
from engine.tiles.geojson import tile_features
from engine.views.geojson import write_geojson

STAGE = "tiles"


@dataclass
class TilesReport:
    run_id: str
    model_id: str
    tiles: int = 0
    slides: list[str] = field(default_factory=list)
    geojson: list[Path] = field(default_factory=list)
    failures: list[FailureRecord] = field(default_factory=list)
    seconds: float = 0.0


def patch_classifier_rows(
    store: SlideStore, prediction: Path, card: ModelCard, model_id: str
) -> list[dict[str, Any]]:
    """Rows of a patch classifier's map: one per scored tile (finite output pixel)."""
    if read_completion(prediction) is None:
        raise StoreIncomplete(
            f"{prediction}: no committed score map; run `slidefleet infer` first."
        )
    group = zarr.open_group(prediction, mode="r")
    scores = np.asarray(group["0"][...], np.float32)  # (C, rows, cols)
    # The grid infer scored on: the model frame of the tolerance the prediction recorded.
    recorded = group.attrs.asdict().get("slidefleet") or {}
    _frame, geometry = slide_tile_geometry(
        store, card, mpp_tolerance=recorded_mpp_tolerance(recorded), unit_tiles=1
    )
    if scores.shape[1:] != (geometry.n_rows, geometry.n_cols):
        raise StoreIncomplete(
            f"{prediction}: map shape {scores.shape} is not the tile grid "
            f"({geometry.n_rows}, {geometry.n_cols}) of {card.ref}."
        )
    rows, cols = np.nonzero(np.isfinite(scores).all(axis=0))
    boxes = tile_boxes_level0(
        geometry, rows, cols, width_px=store.width_px, height_px=store.height_px
    )
    fraction = tiles_tissue_fraction(store, geometry, rows, cols)
    return [
        {
            "slide_id": store.slide_id,
            "model_id": model_id,
            "row": int(r),
            "col": int(c),
            "x": int(b[0]),
            "y": int(b[1]),
            "width": int(b[2]),
            "height": int(b[3]),
            "tissue_fraction": float(f),
            **{
                class_column(name): float(scores[k, r, c])
                for k, name in enumerate(card.class_names)
            },
        }
        for r, c, b, f in zip(rows, cols, boxes, fraction, strict=True)
    ]


def extractor_rows(features_path: Path, model_id: str) -> list[dict[str, Any]]:
    features = read_features(features_path)
    return [
        {
            "slide_id": features.slide_id,
            "model_id": model_id,
            "row": int(g[0]),
            "col": int(g[1]),
            "x": int(b[0]),
            "y": int(b[1]),
            "width": int(b[2]),
            "height": int(b[3]),
            "tissue_fraction": float(f),
        }
        for g, b, f in zip(features.grid, features.coords, features.tissue_fraction, strict=True)
    ]


def _tiles_task(
    root: str, slide_id: str, card_json: str, model_id: str
) -> tuple[list[dict[str, Any]], str | None, Any]:
    layout = FleetLayout(Path(root))
    card = ModelCard.model_validate_json(card_json)
    try:
        if card.is_extractor:
            rows = extractor_rows(layout.features_store(model_id, slide_id), model_id)
        else:
            store = SlideStore.open(layout.slide_store(slide_id))
            rows = patch_classifier_rows(
                store, layout.prediction_store(model_id, slide_id), card, model_id
            )
        path = layout.views_dir / model_id / f"{slide_id}.tiles.geojson"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_geojson(tile_features(rows, card.class_names, model_id=model_id), path)
        return rows, str(path), None
    except (SlideFleetError, OSError, KeyError, ValueError) as exc:
        return [], None, FailureRecord.from_exception(STAGE, slide_id, exc, model_id=model_id)


def write_tiles(
    root: Path | str,
    model: str,
    *,
    slide_ids: list[str] | None = None,
    address: str | None = None,
    run_id: str | None = None,
) -> TilesReport:
    """Write ``tables/tiles`` (partition ``model_id``) and each slide's tile GeoJSON."""
    started = time.perf_counter()
    layout = FleetLayout(Path(root))
    registered = ModelRegistry(layout.root).resolve(model)
    card = registered.card
    if card.kind not in {"patch_classifier", "embedding_extractor"}:
        raise ConfigError(
            f"{registered.ref} is a {card.kind}; tables/tiles is for patch classifiers "
            "and embedding extractors (one value per tile)."
        )
    report = TilesReport(run_id or new_run_id(), registered.model_id)
    base = layout.features_dir if card.is_extractor else layout.predictions_dir
    if slide_ids is None:
        slide_ids = sorted(
            p.name.removesuffix(".zarr")
            for p in (base / registered.model_id).glob("*.zarr")
            if not p.name.startswith(".")
        )
    ensure_ray(address)
    task = ray.remote(_tiles_task).options(num_cpus=1)
    refs = [
        task.remote(str(layout.root), s, card.model_dump_json(), registered.model_id)
        for s in slide_ids
    ]
    schema = with_class_columns(TILES_SCHEMA, card.class_names)
    for (rows, path, failure), slide_id in zip(ray.get(refs), slide_ids, strict=True):
        if failure is not None:
            report.failures.append(failure)
            continue
        write_table_part(
            layout.tables_dir,
            "tiles",
            rows,
            schema=schema,
            partition={"model_id": registered.model_id},
            run_id=report.run_id,
        )
        report.tiles += len(rows)
        report.slides.append(slide_id)
        report.geojson.append(Path(path))
    write_failures(layout.tables_dir, report.failures, run_id=report.run_id)
    report.seconds = time.perf_counter() - started
    return report
