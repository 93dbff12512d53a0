"""Features stores: ``ROOT/features/<model_id>/<slide_id>.zarr``, one embedding per tissue tile.

Built like a prediction store, resumably: while a slide is being extracted its store lives at
``.<slide_id>.zarr.partial-<key>`` (the key hashes slide content, model_id, inference parameters
and the stored dtype). Each actor writes its work unit's rows to ``units/<unit_key>.npz``
(atomically), the driver appends the unit to ``units.log``; a killed run resumes with exactly the
missing units. When every unit is done the rows are gathered in row-major tile order into

* ``embeddings``: (tiles, D), float16 by default;
* ``coords``: (tiles, 4) int64, the tile's kept region in level-0 px (x, y, width, height);
* ``grid``: (tiles, 2) int32, the tile's (row, col) on the model's tile grid;
* ``tissue_fraction``: (tiles,) float32;

the completion record is written last and the store is renamed to its final name.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from numpy.typing import NDArray
from zarr.codecs import ZstdCodec

from engine.errors import StoreIncomplete
from engine.store.completion import read_completion, write_completion

if TYPE_CHECKING:  # engine.infer imports this module: no import of engine.infer at load time
    from engine.infer.plan import WorkUnit

FEATURES_FORMAT_VERSION = 1
UNITS_DIR = "units"


def open_or_create_feature_partial(final_path: Path, key: dict[str, Any]) -> tuple[Path, set[str]]:
    """The partial features store for ``key`` (created if absent) and the units already done."""
    from engine.infer.prediction_store import UNITS_LOG, partial_path, read_done_units

    path = partial_path(final_path, key)
    for stale in final_path.parent.glob(f".{final_path.name}.partial-*"):
        if stale != path:
            shutil.rmtree(stale, ignore_errors=True)
    if not (path / UNITS_DIR).is_dir():
        shutil.rmtree(path, ignore_errors=True)
        (path / UNITS_DIR).mkdir(parents=True)
        (path / UNITS_LOG).touch()
        return path, set()
    done = read_done_units(path)
    return path, {k for k in done if (path / UNITS_DIR / f"{k}.npz").exists()}


def write_feature_unit(
    partial: str | Path,
    unit: WorkUnit,
    positions: list[tuple[int, int]],
    features: NDArray[np.floating],
) -> None:
    """Write one unit's rows: grid positions (unit-relative ``positions`` made global) and features.

    Written to a temporary name and renamed, so a unit file is whole or absent.
    """
    directory = Path(partial) / UNITS_DIR
    grid = np.array([(unit.row0 + r, unit.col0 + c) for r, c in positions], np.int32).reshape(-1, 2)
    tmp = directory / f".{unit.key}.{uuid.uuid4().hex[:8]}.npz"
    with tmp.open("wb") as handle:
        np.savez(handle, grid=grid, features=np.asarray(features, np.float32))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, directory / f"{unit.key}.npz")


def gather_units(
    partial: Path, unit_keys: list[str]
) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    """Every unit's rows, sorted row-major by tile (row, col)."""
    grids, features = [], []
    for key in unit_keys:
        try:
            with np.load(partial / UNITS_DIR / f"{key}.npz") as data:
                grids.append(data["grid"])
                features.append(data["features"])
        except FileNotFoundError:
            raise StoreIncomplete(
                f"unit {key} of {partial} is recorded as done but its features file is missing; "
                "run the extraction again (the unit will be recomputed)."
            ) from None
    grid = np.concatenate(grids) if grids else np.zeros((0, 2), np.int32)
    feats = np.concatenate(features) if features else np.zeros((0, 0), np.float32)
    order = np.lexsort((grid[:, 1], grid[:, 0]))
    return grid[order], feats[order]


def finalise_features(
    path: Path,
    final_path: Path,
    key: dict[str, Any],
    *,
    grid: NDArray[np.int32],
    features: NDArray[np.float32],
    coords: NDArray[np.int64],
    tissue_fraction: NDArray[np.float32],
    dtype: str,
    attributes: dict[str, Any],
    result: dict[str, Any],
) -> None:
    """Write the gathered arrays, the metadata and the completion record; rename into place."""
    group = zarr.open_group(path, mode="a", zarr_format=3)
    n, dim = features.shape
    rows_per_chunk = max(1, min(n, 4096))
    compressors = [ZstdCodec(level=3)]
    for name, array, chunks in (
        ("embeddings", features.astype(dtype), (rows_per_chunk, dim)),
        ("coords", coords.astype(np.int64), (rows_per_chunk, 4)),
        ("grid", grid.astype(np.int32), (rows_per_chunk, 2)),
        ("tissue_fraction", tissue_fraction.astype(np.float32), (rows_per_chunk,)),
    ):
        if name in group:
            del group[name]
        target = group.create_array(
            name, shape=array.shape, chunks=chunks, dtype=array.dtype, compressors=compressors
        )
        if array.size:
            target[...] = array
    group.attrs["slidefleet"] = {
        **attributes,
        "tiles": int(n),
        "embedding_dim": int(dim),
        "dtype": dtype,
        "format": FEATURES_FORMAT_VERSION,
    }
    shutil.rmtree(path / UNITS_DIR, ignore_errors=True)
    write_completion(path, {"input_key": key, "result": result})
    trash = final_path.parent / f".{final_path.name}.trash-{uuid.uuid4().hex[:8]}"
    if final_path.exists():
        os.replace(final_path, trash)
    os.replace(path, final_path)
    shutil.rmtree(trash, ignore_errors=True)


@dataclass(frozen=True)
class SlideFeatures:
    """A committed features store, read into memory."""

    slide_id: str
    model_id: str
    embeddings: NDArray[np.floating]  # (N, D)
    coords: NDArray[np.int64]  # (N, 4) x, y, width, height, level-0 px
    grid: NDArray[np.int32]  # (N, 2) row, col
    tissue_fraction: NDArray[np.float32]  # (N,)
    attributes: dict[str, Any]


def read_features(path: Path | str) -> SlideFeatures:
    """Read a committed features store; an uncommitted one raises :class:`StoreIncomplete`."""
    path = Path(path)
    if read_completion(path) is None:
        raise StoreIncomplete(
            f"features store {path} is missing or was never completed; run the extraction "
            "(slidefleet infer --model <extractor>) for this slide."
        )
    group = zarr.open_group(path, mode="r")
    attributes = dict(group.attrs["slidefleet"])
    return SlideFeatures(
        slide_id=str(attributes["slide_id"]),
        model_id=str(attributes["model_id"]),
        embeddings=np.asarray(group["embeddings"][...]),
        coords=np.asarray(group["coords"][...]),
        grid=np.asarray(group["grid"][...]),
        tissue_fraction=np.asarray(group["tissue_fraction"][...]),
        attributes=attributes,
    )


def features_key(prediction_key: dict[str, Any], dtype: str) -> dict[str, Any]:
    """A features store's content key: the prediction key plus what only features depend on."""
    return {**prediction_key, "feature_dtype": dtype, "features_format": FEATURES_FORMAT_VERSION}
