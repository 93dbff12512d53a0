"""Convert one slide into an OME-Zarr (NGFF 0.5, zarr v3) store, block by block.

Layout of ``<slide_id>.ome.zarr``::

    zarr.json            attributes.ome (multiscales, omero) and attributes.slidefleet (provenance)
    0/ 1/ ...            RGB pyramid, (c, y, x) uint8, lossless zstd
    labels/tissue/       tissue mask (0/1) at the detection resolution, then 2x levels
    labels/annotation/   ground truth rasterised from XML / GeoJSON / a label mask (if given)
    slidefleet-complete.json   completion record, written last

Memory is bounded by ``block_px``: nothing reads a whole level-0 image.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from numpy.typing import NDArray
from zarr.codecs import ZstdCodec

from engine import __version__
from engine.errors import BadAnnotation, NoTissue, SlideFleetError
from engine.ingest.params import IngestParams
from engine.ingest.pyramid import (
    LevelPlan,
    centre_sample_indices,
    downsample_area_2x,
    labels_at_centres,
    plan_levels,
)
from engine.manifest import SlideEntry
from engine.slides import SlideReader, open_slide, slide_content_sha256
from engine.store import FleetLayout, atomic_directory, ngff, read_completion, write_completion
from engine.store.frame import Frame
from engine.store.writer import BackgroundWriter
from engine.tissue import detect_tissue

log = logging.getLogger(__name__)

_TISSUE_COLORS = {0: (0, 0, 0, 0), 1: (0, 200, 0, 96)}
_MAX_TISSUE_LEVEL_PX = 16_000_000


@dataclass(frozen=True)
class IngestResult:
    """What ingest produced for one slide (a row of the ``ingested`` table)."""

    slide_id: str
    source_path: str
    source_sha256: str
    vendor: str
    width_px: int
    height_px: int
    mpp: float
    mpp_source: str
    levels: int
    tissue_fraction: float
    tissue_area_mm2: float
    annotation_path: str | None
    annotated_area_mm2: float | None
    split: str | None
    label: str | None
    store_path: str
    params_hash: str
    seconds: float
    skipped: bool
    annotation_error: SlideFleetError | None = None
    cpu_seconds: float | None = None  # telemetry, not in the table
    peak_rss_mib: float | None = None  # telemetry: the worker process's peak RSS so far

    def table_row(self) -> dict[str, Any]:
        row = dict(self.__dict__)
        for telemetry_only in ("annotation_error", "cpu_seconds", "peak_rss_mib"):
            row.pop(telemetry_only)
        return row


def input_key(entry: SlideEntry, params: IngestParams) -> dict[str, Any]:
    """Everything that decides a store's content: if it matches the record, the store is reused."""
    return {
        "source_sha256": slide_content_sha256(entry.path),
        "annotation_sha256": slide_content_sha256(entry.annotation) if entry.annotation and entry.annotation.exists() else None,
        "mpp_override": entry.mpp_override,
        "params_hash": params.output_hash(),
    }


def _create_array(group: zarr.Group, name: str, shape: tuple[int, ...], chunk_px: int, zstd_level: int,
                  dimension_names: tuple[str, ...], fill_value: int) -> zarr.Array:
    chunks = (shape[0], chunk_px, chunk_px) if len(shape) == 3 else (chunk_px, chunk_px)
    return group.create_array(
        name,
        shape=shape,
        dtype="uint8",
        chunks=chunks,
        compressors=[ZstdCodec(level=zstd_level)],
        dimension_names=dimension_names,
        fill_value=fill_value,
    )


def _copy_native_level(reader: SlideReader, array: zarr.Array, plan: LevelPlan, block_px: int) -> None:
    assert plan.native_level is not None
    with BackgroundWriter() as writer:
        for y in range(0, plan.height_px, block_px):
            for x in range(0, plan.width_px, block_px):
                width_px = min(block_px, plan.width_px - x)
                height_px = min(block_px, plan.height_px - y)
                rgb = reader.read_region_rgb(
                    round(x * plan.downsample_x), round(y * plan.downsample_y), plan.native_level, width_px, height_px
                )
                chw = np.ascontiguousarray(rgb.transpose(2, 0, 1))
                writer.submit(array, (slice(None), slice(y, y + height_px), slice(x, x + width_px)), chw)


def _downsample_level(source: zarr.Array, target: zarr.Array, out_block_px: int) -> None:
    """Fill ``target`` with a 2x area downsample of RGB ``source``, one output block at a time."""
    height_px, width_px = target.shape[-2:]
    for y in range(0, height_px, out_block_px):
        for x in range(0, width_px, out_block_px):
            h = min(out_block_px, height_px - y)
            w = min(out_block_px, width_px - x)
            block = source[:, 2 * y : 2 * (y + h), 2 * x : 2 * (x + w)]
            target[:, y : y + h, x : x + w] = downsample_area_2x(block)[:, :h, :w]


def _write_rgb_pyramid(reader: SlideReader, group: zarr.Group, levels: list[LevelPlan], params: IngestParams) -> None:
    previous: zarr.Array | None = None
    out_block_px = max(params.chunk_px, params.block_px // 2)
    for plan in levels:
        array = _create_array(group, str(plan.index), (3, plan.height_px, plan.width_px), params.chunk_px,
                              params.zstd_level, ("c", "y", "x"), 255)
        if plan.native_level is not None:
            _copy_native_level(reader, array, plan, params.block_px)
        else:
            assert previous is not None
            _downsample_level(previous, array, out_block_px)
        previous = array


def _label_level_from_base(base: zarr.Array, target: zarr.Array, factor: int, out_block_px: int) -> None:
    """Fill ``target`` with ``base`` sampled at the centres of pixels ``factor`` x coarser.

    Each coarse value comes from the (at most four) base pixels nearest its centre, the point the
    level's NGFF translation names, so every level is registered to the base within half a base
    pixel. Reads only those rows and columns of the base, one output block at a time.
    """
    base_h, base_w = base.shape
    height_px, width_px = target.shape
    rows_lo, rows_hi = centre_sample_indices(height_px, factor, base_h)
    cols_lo, cols_hi = centre_sample_indices(width_px, factor, base_w)
    for y in range(0, height_px, out_block_px):
        for x in range(0, width_px, out_block_px):
            r_lo, r_hi = rows_lo[y : y + out_block_px], rows_hi[y : y + out_block_px]
            c_lo, c_hi = cols_lo[x : x + out_block_px], cols_hi[x : x + out_block_px]
            rows, row_inv = np.unique(np.concatenate([r_lo, r_hi]), return_inverse=True)
            cols, col_inv = np.unique(np.concatenate([c_lo, c_hi]), return_inverse=True)
            block = np.asarray(base.get_orthogonal_selection((rows, cols)))
            rl, rh = row_inv[: r_lo.size], row_inv[r_lo.size :]
            cl, ch = col_inv[: c_lo.size], col_inv[c_lo.size :]
            target[y : y + r_lo.size, x : x + c_lo.size] = labels_at_centres(
                block[np.ix_(rl, cl)], block[np.ix_(rl, ch)], block[np.ix_(rh, cl)], block[np.ix_(rh, ch)]
            )


def _label_pyramid(group: zarr.Group, base: zarr.Array, params: IngestParams, n_levels: int) -> int:
    """Add 2x levels under ``group`` after ``base`` (path "0") up to ``n_levels`` in all.

    NGFF readers (ome-zarr-models) expect a label to have as many levels as its image; each level
    carries its own true scale, so the label pyramid starts at its own (coarser) resolution.
    Level ``k`` is sampled from the base at its own pixel centres (never from the level above,
    which would compound the half-pixel offsets of each 2x step).
    """
    shape = base.shape
    out_block_px = max(params.chunk_px, params.block_px // 2)
    for level in range(1, n_levels):
        shape = tuple(max(1, math.ceil(s / 2)) for s in shape)
        array = _create_array(group, str(level), shape, params.chunk_px, params.zstd_level, ("y", "x"), 0)
        _label_level_from_base(base, array, 2**level, out_block_px)
    return n_levels


def _label_levels(count: int, mpp_y: float, mpp_x: float, ds_y: float, ds_x: float) -> list[Frame]:
    return [ngff.level_scale(str(i), mpp_y, mpp_x, ds_y * 2**i, ds_x * 2**i) for i in range(count)]


def _choose_tissue_level(levels: list[LevelPlan], mpp: float, target_mpp: float) -> LevelPlan:
    candidates = [p for p in levels if p.width_px * p.height_px <= _MAX_TISSUE_LEVEL_PX] or [levels[-1]]
    return min(candidates, key=lambda p: abs(math.log(mpp * (p.downsample_x + p.downsample_y) / 2 / target_mpp)))


def _write_tissue(image: zarr.Group, labels: zarr.Group, levels: list[LevelPlan], mpp_y: float, mpp_x: float,
                  params: IngestParams) -> tuple[float, float]:
    """Detect tissue on a low level, write ``labels/tissue``; return (fraction, area_mm2)."""
    n_levels = len(levels)
    plan = _choose_tissue_level(levels, (mpp_x + mpp_y) / 2, params.tissue.target_mpp)
    rgb = np.asarray(image[str(plan.index)][:]).transpose(1, 2, 0)
    level_mpp = (mpp_x * plan.downsample_x + mpp_y * plan.downsample_y) / 2
    mask = detect_tissue(rgb, level_mpp, params.tissue.to_params())
    fraction = float(mask.mean())
    area_mm2 = float(mask.sum()) * (mpp_x * plan.downsample_x) * (mpp_y * plan.downsample_y) / 1e6
    if fraction < params.tissue.min_tissue_fraction:
        raise NoTissue(
            f"no tissue detected ({fraction:.4%} of the slide, threshold "
            f"{params.tissue.min_tissue_fraction:.4%}); the slide looks like blank glass. Check the file, "
            "or lower tissue.min_saturation if the staining is very pale."
        )
    group = labels.create_group("tissue")
    base = _create_array(group, "0", mask.shape, params.chunk_px, params.zstd_level, ("y", "x"), 0)
    base[:] = mask.astype(np.uint8)
    count = _label_pyramid(group, base, params, n_levels)
    group.attrs["ome"] = ngff.label_attributes(
        "tissue",
        _label_levels(count, mpp_y, mpp_x, plan.downsample_y, plan.downsample_x),
        colors=_TISSUE_COLORS,
        properties={0: {"class": "background"}, 1: {"class": "tissue"}},
    )
    return fraction, area_mm2


def _write_annotation(entry: SlideEntry, reader: SlideReader, labels: zarr.Group, params: IngestParams,
                      n_levels: int) -> float:
    """Rasterise the ground truth into ``labels/annotation``; return the labelled area in mm²."""
    from engine.annotations import class_map_preset, load_annotation

    info = reader.info
    assert entry.annotation is not None
    if not entry.annotation.exists():
        raise BadAnnotation(f"{entry.annotation}: annotation file not found.")
    class_map = class_map_preset(params.class_map)
    annotation = load_annotation(
        entry.annotation, class_map, slide_width_px=info.width_px, slide_height_px=info.height_px
    )
    downsample = max(1.0, params.annotation_mpp / info.mpp)
    width_px = math.ceil(info.width_px / downsample)
    height_px = math.ceil(info.height_px / downsample)
    group = labels.create_group("annotation")
    base = _create_array(group, "0", (height_px, width_px), params.chunk_px, params.zstd_level, ("y", "x"), 0)
    labelled_px = 0
    block = params.block_px
    for y in range(0, height_px, block):
        for x in range(0, width_px, block):
            w, h = min(block, width_px - x), min(block, height_px - y)
            raster: NDArray[np.uint8] = annotation.rasterise_block(
                x * downsample, y * downsample, w, h, downsample
            )
            labelled_px += int(np.count_nonzero(raster))
            base[y : y + h, x : x + w] = raster
    count = _label_pyramid(group, base, params, n_levels)
    group.attrs["ome"] = ngff.label_attributes(
        "annotation",
        _label_levels(count, info.mpp_y, info.mpp_x, downsample, downsample),
        properties={value: {"class": name} for value, name in {0: "background", **class_map.label_names}.items()},
    )
    return labelled_px * (downsample * info.mpp) ** 2 / 1e6


def convert_slide(entry: SlideEntry, layout: FleetLayout, params: IngestParams) -> IngestResult:
    """Convert one slide (or reuse its complete, up-to-date store). Raises SlideFleetError subclasses."""
    started = time.perf_counter()
    store_path = layout.slide_store(entry.slide_id)
    if not entry.path.exists():
        from engine.errors import SlideNotFound

        raise SlideNotFound(f"{entry.path}: slide file not found (slide_id {entry.slide_id}).")
    key = input_key(entry, params)
    record = read_completion(store_path)
    if record is not None and record.get("input_key") == key:
        previous_error = record.get("annotation_error")
        return IngestResult(
            **{**record["result"], "seconds": time.perf_counter() - started, "skipped": True},
            annotation_error=BadAnnotation(previous_error["message"]) if previous_error else None,
        )

    with open_slide(entry.path, mpp_override=entry.mpp_override) as reader:
        info = reader.info
        levels = plan_levels(info, params.min_level_px)
        annotation_error: SlideFleetError | None = None
        with atomic_directory(store_path) as tmp_path:
            image = zarr.open_group(tmp_path, mode="w", zarr_format=3)
            _write_rgb_pyramid(reader, image, levels, params)
            labels = image.create_group("labels")
            tissue_fraction, tissue_area_mm2 = _write_tissue(image, labels, levels, info.mpp_y, info.mpp_x, params)
            label_names = ["tissue"]
            annotated_area_mm2: float | None = None
            if entry.annotation is not None:
                try:
                    annotated_area_mm2 = _write_annotation(entry, reader, labels, params, len(levels))
                    label_names.append("annotation")
                except BadAnnotation as exc:
                    annotation_error = exc
                    if "annotation" in labels:
                        del labels["annotation"]
            labels.attrs["ome"] = ngff.labels_group_attributes(label_names)
            scales = [
                ngff.level_scale(str(p.index), info.mpp_y, info.mpp_x, p.downsample_y, p.downsample_x)
                for p in levels
            ]
            result = IngestResult(
                slide_id=entry.slide_id,
                source_path=str(entry.path),
                source_sha256=key["source_sha256"],
                vendor=info.vendor,
                width_px=info.width_px,
                height_px=info.height_px,
                mpp=info.mpp,
                mpp_source=info.mpp_source,
                levels=len(levels),
                tissue_fraction=tissue_fraction,
                tissue_area_mm2=tissue_area_mm2,
                annotation_path=str(entry.annotation) if entry.annotation and annotation_error is None else None,
                annotated_area_mm2=annotated_area_mm2,
                split=entry.split,
                label=entry.label,
                store_path=str(store_path),
                params_hash=key["params_hash"],
                seconds=0.0,
                skipped=False,
            )
            image.attrs["ome"] = ngff.image_attributes(entry.slide_id, scales)
            image.attrs["slidefleet"] = {
                "engine_version": __version__,
                "slide_id": entry.slide_id,
                "source_path": str(entry.path),
                "source_sha256": key["source_sha256"],
                "vendor": info.vendor,
                "width_px": info.width_px,
                "height_px": info.height_px,
                "mpp_x": info.mpp_x,
                "mpp_y": info.mpp_y,
                "mpp_source": info.mpp_source,
                "objective_power": info.objective_power,
                "native_level_downsamples": list(info.level_downsamples),
                "levels": [
                    {"path": str(p.index), "native_level": p.native_level,
                     "downsample_x": p.downsample_x, "downsample_y": p.downsample_y}
                    for p in levels
                ],
                "orientation": "as stored (OpenSlide's frame; TIFF Orientation tags are not applied)",
                "annotation_path": result.annotation_path,
                "ingest_params": params.model_dump(),
                "params_hash": key["params_hash"],
            }
            seconds = time.perf_counter() - started
            result_fields = {**result.table_row(), "seconds": seconds}
            write_completion(
                tmp_path,
                {"input_key": key, "result": result_fields, "engine_version": __version__,
                 "annotation_error": None if annotation_error is None else
                 {"error_type": type(annotation_error).__name__, "message": str(annotation_error)}},
            )
    return IngestResult(**{**result_fields, "annotation_error": annotation_error})
