"""Reading a slide's bag from its features store (and, for top-K, its score map)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numpy.typing import NDArray

from engine.errors import StoreIncomplete
from engine.features.store import read_features
from engine.mil.bags import select_bag, tile_scores_from_map
from engine.mil.params import BagParams
from engine.store import read_completion


@dataclass(frozen=True)
class BagSource:
    """Where one slide's bag comes from (paths only: cheap to send to a Ray task)."""

    slide_id: str
    features_path: str
    score_path: str | None = None
    score_channel: int | None = None


@dataclass(frozen=True)
class Bag:
    slide_id: str
    embeddings: NDArray[np.float32]  # (K, D)
    coords: NDArray[np.int64]  # (K, 4) level-0 x, y, width, height
    grid: NDArray[np.int32]  # (K, 2) row, col on the extractor's tile grid
    tile_scores: NDArray[np.float32] | None  # (K,) the selecting map's score, top-K only
    features_attributes: dict[str, Any]
    input_keys: dict[str, Any]  # content keys of the stores the bag was read from


def load_bag(source: BagSource, params: BagParams) -> Bag:
    """The slide's bag: its features, selected by tissue and (top-K) by the score map."""
    features = read_features(source.features_path)
    input_keys: dict[str, Any] = {
        "features": (read_completion(Path(source.features_path)) or {}).get("input_key")
    }
    scores = None
    if params.selection == "top_k":
        if source.score_path is None or source.score_channel is None:
            raise ValueError("top-K bags need a score map (mil.bags.score_model)")
        score_path = Path(source.score_path)
        record = read_completion(score_path)
        if record is None:
            raise StoreIncomplete(
                f"score map {score_path} is missing or incomplete: run `slidefleet infer` with the "
                "bag's score_model first."
            )
        input_keys["scores"] = record.get("input_key")
        group = zarr.open_group(score_path, mode="r")
        out_um = float(group.attrs["slidefleet"]["output_px_um"])
        mpp_y, mpp_x = features.attributes["slide_mpp"]
        channel = np.asarray(group["0"][source.score_channel], np.float32)
        scores = tile_scores_from_map(
            channel,
            features.coords,
            level0_px_per_map_px_x=out_um / float(mpp_x),
            level0_px_per_map_px_y=out_um / float(mpp_y),
        )
    index = select_bag(
        features.tissue_fraction,
        min_tissue_fraction=params.min_tissue_fraction,
        k=params.k if scores is not None else None,
        tile_scores=scores,
    )
    return Bag(
        slide_id=source.slide_id,
        embeddings=features.embeddings[index].astype(np.float32),
        coords=features.coords[index],
        grid=features.grid[index],
        tile_scores=None if scores is None else scores[index],
        features_attributes=features.attributes,
        input_keys=input_keys,
    )
