"""Prediction stores: ``ROOT/predictions/<model_id>/<slide_id>.zarr``, built resumably.

While a slide is being scored its store lives at ``.<slide_id>.zarr.partial-<key>`` (the key
hashes slide content, model_id and inference parameters). Each finished work unit is appended to
``units.log`` after its chunk is written, so a killed run resumes with exactly the units that are
missing. When every unit is done the lower levels are built, the completion record is written and
the store is renamed to its final name.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from engine.infer.plan import TileGeometry
from engine.keys import content_hash
from engine.store import ngff
from engine.store.completion import read_completion, write_completion

UNITS_LOG = "units.log"


def input_key_hash(key: dict[str, Any]) -> str:
    return content_hash(key)


def partial_path(final_path: Path, key: dict[str, Any]) -> Path:
    return final_path.parent / f".{final_path.name}.partial-{input_key_hash(key)}"


def is_complete(final_path: Path, key: dict[str, Any]) -> bool:
    record = read_completion(final_path)
    return record is not None and record.get("input_key") == key


def open_or_create_partial(
    final_path: Path, key: dict[str, Any], geometry: TileGeometry, channel_names: list[str]
) -> tuple[Path, set[str]]:
    """The partial store for ``key`` (created if absent) and the unit keys already done in it."""
    path = partial_path(final_path, key)
    for stale in final_path.parent.glob(f".{final_path.name}.partial-*"):
        if stale != path:  # made for other inputs: never valid for these
            shutil.rmtree(stale, ignore_errors=True)
    if not (path / "0" / "zarr.json").exists():
        shutil.rmtree(path, ignore_errors=True)
        group = zarr.open_group(path, mode="w", zarr_format=3)
        chunk = geometry.out_chunk_px
        group.create_array(
            "0",
            shape=(len(channel_names), geometry.out_height_px, geometry.out_width_px),
            chunks=(len(channel_names), chunk, chunk),
            dtype="float32",
            fill_value=float("nan"),
            compressors=[ZstdCodec(level=1)],
            dimension_names=("c", "y", "x"),
        )
        (path / UNITS_LOG).touch()
        return path, set()
    return path, read_done_units(path)


def read_done_units(path: Path) -> set[str]:
    """Units recorded as done; a line cut short by a crash (no newline) does not count."""
    try:
        text = (path / UNITS_LOG).read_text()
    except FileNotFoundError:
        return set()
    lines = text.split("\n")
    return {line for line in lines[:-1] if line}


def record_unit_done(path: Path, unit_key: str) -> None:
    with (path / UNITS_LOG).open("a") as handle:
        handle.write(unit_key + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _nanmean_2x(block: np.ndarray) -> np.ndarray:
    c, h, w = block.shape
    padded = np.full((c, h + h % 2, w + w % 2), np.nan, np.float32)
    padded[:, :h, :w] = block
    quads = padded.reshape(c, padded.shape[1] // 2, 2, padded.shape[2] // 2, 2)
    valid = np.isfinite(quads)
    total = np.where(valid, quads, 0).sum(axis=(2, 4))
    count = valid.sum(axis=(2, 4))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)


def finalise(
    path: Path,
    final_path: Path,
    key: dict[str, Any],
    geometry: TileGeometry,
    *,
    mpp_x: float,
    mpp_y: float,
    channel_names: list[str],
    attributes: dict[str, Any],
    result: dict[str, Any],
    min_level_px: int = 256,
) -> None:
    """Build 2x NaN-aware mean levels, write metadata and the record, rename into place."""
    group = zarr.open_group(path, mode="r+")
    previous = group["0"]
    n_levels = 1
    block = 1024
    while max(previous.shape[1:]) > min_level_px:
        height, width = (math.ceil(s / 2) for s in previous.shape[1:])
        array = group.create_array(
            str(n_levels),
            shape=(previous.shape[0], height, width),
            chunks=(previous.shape[0], 512, 512),
            dtype="float32",
            fill_value=float("nan"),
            compressors=[ZstdCodec(level=1)],
            dimension_names=("c", "y", "x"),
        )
        for y in range(0, height, block):
            for x in range(0, width, block):
                source = previous[:, 2 * y : 2 * (y + block), 2 * x : 2 * (x + block)]
                reduced = _nanmean_2x(np.asarray(source))
                array[:, y : y + reduced.shape[1], x : x + reduced.shape[2]] = reduced
        previous, n_levels = array, n_levels + 1
    levels = [
        ngff.level_scale(
            str(i),
            mpp_y,
            mpp_x,
            geometry.level0_per_out_px_y * 2**i,
            geometry.level0_per_out_px_x * 2**i,
        )
        for i in range(n_levels)
    ]
    group.attrs["ome"] = ngff.score_map_attributes(attributes["slide_id"], levels, channel_names)
    group.attrs["slidefleet"] = attributes
    write_completion(path, {"input_key": key, "result": result, "run_id": attributes.get("run_id")})
    trash = final_path.parent / f".{final_path.name}.trash-{input_key_hash(key)}"
    if final_path.exists():
        os.replace(final_path, trash)
    os.replace(path, final_path)
    shutil.rmtree(trash, ignore_errors=True)
