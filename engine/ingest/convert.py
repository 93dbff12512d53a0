"""Convert one slide into an OME-Zarr (NGFF 0.5, zarr v3) store, block by block.

Layout of ``<slide_id>.ome.zarr``::

    zarr.json            attributes.ome (multiscales, omero) and attributes.slidefleet (provenance)
    0/ 1/ ...            RGB pyramid, (c, y, x) uint8: the slide's own JPEG tiles where it has them
                         (``ingest.source_tiles``), else lossless zstd
    labels/tissue/       tissue mask (0/1) at the detection resolution, then 2x levels
    labels/annotation/   ground truth rasterised from XML / GeoJSON / a label mask (if given)
    slidefleet-coverage/  sparse stores: per sparse level, 1 per chunk written from the slide (others read white)
    slidefleet-complete.json   completion record, written last

Sparse stores (``ingest.sparse``, the default): the tissue-detection level (nearest
``tissue.target_mpp``) and every coarser level are written complete first; tissue is detected
there and dilated by ``sparse_margin_um``; the finer levels are then converted only in the chunks
that touch the dilated mask (see :mod:`engine.ingest.sparse`). Unwritten chunks read as the fill
value, white glass, in every zarr reader.

Source tiles (``ingest.source_tiles``, the default): a native level that the slide stores as JPEG
tiles OpenSlide decodes verbatim (Aperio SVS, generic tiled TIFF) keeps those tiles, byte for
byte, as its chunks (see :mod:`engine.ingest.source_tiles`): no decode, no re-encode, and no more
bytes than the source. Its chunks are the source tiles; every other level uses ``chunk_px``.

Memory is bounded by ``block_px``: nothing reads a whole level-0 image. One slide is decoded by
``cpus_per_slide`` threads (OpenSlide releases the GIL), chunk-aligned so no chunk has two writers.
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
from engine.ingest.levels import (
    CountingReader,
    copy_native,
    copy_source_tiles,
    default_threads,
    downsample_chain,
    downsample_stored,
    half_chain_aligned,
    prune,
)
from engine.ingest.params import IngestParams
from engine.ingest.pyramid import (
    LevelPlan,
    centre_sample_indices,
    labels_at_centres,
    plan_levels,
)
from engine.ingest.source_tiles import SourceTileLayout, find_source_tiles
from engine.ingest.sparse import dilate, margin_px, plan_coverage
from engine.manifest import SlideEntry
from engine.slides import SlideReader, open_slide, slide_content_sha256
from engine.slides.hashing import HashCache, check_input_file
from engine.store import FleetLayout, atomic_directory, ngff, read_completion, write_completion
from engine.store.frame import Frame
from engine.store.jpeg_codec import JpegCodec
from engine.store.slide_store import COVERAGE_GROUP
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
    decoded_megapixels: float | None = None  # telemetry: pixels decoded from the slide file

    def table_row(self) -> dict[str, Any]:
        row = dict(self.__dict__)
        for telemetry_only in (
            "annotation_error",
            "cpu_seconds",
            "peak_rss_mib",
            "decoded_megapixels",
        ):
            row.pop(telemetry_only)
        return row


def _annotation_sha256(entry: SlideEntry, cache: HashCache | None) -> str | None:
    """The annotation's hash, or None when it is missing or not a usable file (a BadAnnotation later)."""
    if entry.annotation is None:
        return None
    try:
        return slide_content_sha256(entry.annotation, cache=cache, what="annotation")
    except SlideFleetError:
        return None


def input_key(
    entry: SlideEntry, params: IngestParams, *, cache: HashCache | None = None
) -> dict[str, Any]:
    """Everything that decides a store's content: if it matches the record, the store is reused.

    Raises :class:`~engine.errors.SlideUnreadable` subclasses, without reading a byte, when the
    slide path is not a regular file (see :func:`~engine.slides.hashing.check_input_file`).
    """
    return {
        "source_sha256": slide_content_sha256(entry.path, cache=cache),
        "annotation_sha256": _annotation_sha256(entry, cache),
        "mpp_override": entry.mpp_override,
        "params_hash": params.output_hash(),
    }


def _create_array(
    group: zarr.Group,
    name: str,
    shape: tuple[int, ...],
    chunk_px: int,
    zstd_level: int,
    dimension_names: tuple[str, ...],
    fill_value: int,
    *,
    jpeg_quality: int | None = None,
) -> zarr.Array:
    """A uint8 array: lossless zstd, or one JPEG per (3, y, x) chunk when ``jpeg_quality`` is given."""
    chunks = (shape[0], chunk_px, chunk_px) if len(shape) == 3 else (chunk_px, chunk_px)
    codecs: dict[str, Any] = {"compressors": [ZstdCodec(level=zstd_level)]}
    if jpeg_quality is not None:
        codecs = {"serializer": JpegCodec(quality=jpeg_quality), "compressors": None}
    return group.create_array(
        name,
        shape=shape,
        dtype="uint8",
        chunks=chunks,
        dimension_names=dimension_names,
        fill_value=fill_value,
        **codecs,
    )


def _create_rgb_array(
    group: zarr.Group, plan: LevelPlan, params: IngestParams, source: SourceTileLayout | None = None
) -> zarr.Array:
    if source is not None:  # chunks are the slide's own JPEG tiles
        return group.create_array(
            str(plan.index),
            shape=(3, plan.height_px, plan.width_px),
            dtype="uint8",
            chunks=(3, source.tile_px, source.tile_px),
            dimension_names=("c", "y", "x"),
            fill_value=255,
            serializer=JpegCodec(source_tiles=True),
            compressors=None,
        )
    return _create_array(
        group,
        str(plan.index),
        (3, plan.height_px, plan.width_px),
        params.chunk_px,
        params.zstd_level,
        ("c", "y", "x"),
        255,
        jpeg_quality=params.jpeg_quality if params.codec == "jpeg" else None,
    )


@dataclass(frozen=True)
class PyramidOutcome:
    """What the RGB pyramid writer did: coverage per sparse level (absent = complete), chunk side
    per level, and what was copied from the slide's own tiles (by level index)."""

    tissue_plan: LevelPlan
    coverage: dict[int, NDArray[np.bool_]]
    margin_px: int | None
    tissue: (
        tuple[NDArray[np.bool_], float, float] | None
    )  # (mask, fraction, area_mm2) if detected first
    chunk_px: dict[int, int]
    source_tiles: dict[int, dict[str, Any]]


@dataclass(frozen=True)
class _PyramidSources:
    """The slide's JPEG tilings that native levels copy (by OpenSlide level), and what was copied."""

    layouts: dict[int, SourceTileLayout]
    copied: dict[int, dict[str, Any]]

    def of(self, plan: LevelPlan) -> SourceTileLayout | None:
        return None if plan.native_level is None else self.layouts.get(plan.native_level)

    def chunk_px(self, plan: LevelPlan, params: IngestParams) -> int:
        source = self.of(plan)
        return params.chunk_px if source is None else source.tile_px


def _write_level(
    reader: SlideReader,
    group: zarr.Group,
    plan: LevelPlan,
    previous: zarr.Array | None,
    params: IngestParams,
    threads: int,
    sources: _PyramidSources,
    coverage: NDArray[np.bool_] | None = None,
) -> zarr.Array:
    source = sources.of(plan)
    array = _create_rgb_array(group, plan, params, source)
    if source is not None:
        tiles, n_bytes = copy_source_tiles(
            reader,
            source,
            array,
            threads,
            coverage,
            decode_check=params.verify_source_tiles == "openslide",
        )
        sources.copied[plan.index] = {
            **source.provenance(tiles, n_bytes),
            "verified": params.verify_source_tiles,
        }
    elif plan.native_level is not None:
        copy_native(reader, array, plan, params.block_px, params.chunk_px, threads, coverage)
    else:
        assert previous is not None
        out_block_px = max(params.chunk_px, params.block_px // 2)
        counting = reader if isinstance(reader, CountingReader) else None
        downsample_stored(
            previous,
            array,
            out_block_px,
            params.chunk_px,
            threads,
            coverage,
            count_decoded=counting.count_decoded
            if counting is not None and _is_source_tiles(previous)
            else None,
        )
    return array


def _is_source_tiles(array: zarr.Array) -> bool:
    serializer = array.serializer
    return isinstance(serializer, JpegCodec) and serializer.holds_source_tiles


def _write_rgb_pyramid(
    reader: SlideReader,
    group: zarr.Group,
    levels: list[LevelPlan],
    params: IngestParams,
    threads: int,
) -> PyramidOutcome:
    """Full mode: every level in order. Sparse mode: the tissue level, the levels at least
    ``sparse_complete_um`` coarse and everything coarser first (complete), detect and dilate
    tissue on the tissue level, then only the chunks of finer levels that touch it."""
    mpp = (reader.info.mpp_x + reader.info.mpp_y) / 2
    tissue_plan = _choose_tissue_level(levels, mpp, params.tissue.target_mpp)
    sources = _PyramidSources(find_source_tiles(reader) if params.source_tiles else {}, {})
    chunk_px = {p.index: sources.chunk_px(p, params) for p in levels}
    if (
        not params.sparse
        or _first_complete_level(levels, mpp, tissue_plan, params.sparse_complete_um).index == 0
    ):
        previous: zarr.Array | None = None
        for plan in levels:
            previous = _write_level(reader, group, plan, previous, params, threads, sources)
        return PyramidOutcome(tissue_plan, {}, None, None, chunk_px, sources.copied)

    # 1. The finest complete level (the tissue level, or a finer one at least sparse_complete_um
    #    coarse), without writing the levels finer than it.
    first = _first_complete_level(levels, mpp, tissue_plan, params.sparse_complete_um)
    decoded_native: zarr.Array | None = None
    decoded_half: zarr.Array | None = None
    native = first
    if first.native_level is not None:
        previous = _write_level(reader, group, first, None, params, threads, sources)
    else:
        native = max(
            (p for p in levels if p.native_level is not None and p.index < first.index),
            key=lambda p: p.index,
        )
        previous = _create_rgb_array(group, first, params)
        # The native level is decoded in full for this anyway: keep it, prune it once the mask
        # exists. If its own tiles are copied instead (no decoded pixels needed), keep the level
        # above it, which would otherwise be computed by decoding the native level again.
        steps = first.index - native.index
        if sources.of(native) is None:
            decoded_native = _create_rgb_array(group, native, params)
        elif steps >= 2 and half_chain_aligned(params.block_px, params.chunk_px, steps):
            half_level = levels[native.index + 1]
            decoded_half = _create_rgb_array(group, half_level, params)
        downsample_chain(
            reader,
            previous,
            native,
            steps,
            params.block_px,
            params.chunk_px,
            threads,
            native_target=decoded_native,
            half_target=decoded_half,
        )
    # 2. Coarser levels, complete.
    for plan in levels[first.index + 1 :]:
        previous = _write_level(reader, group, plan, previous, params, threads, sources)
    # 3. Tissue on the tissue level, dilated by the margin; coverage of every finer level.
    mask, fraction, area_mm2 = _detect_tissue(
        group, tissue_plan, reader.info.mpp_y, reader.info.mpp_x, params
    )
    level_um = mpp * (tissue_plan.downsample_x + tissue_plan.downsample_y) / 2
    radius = margin_px(params.sparse_margin_um, level_um)
    sparse_levels = levels[: first.index]
    coverage = plan_coverage(
        dilate(mask, radius),
        (tissue_plan.downsample_y, tissue_plan.downsample_x),
        sparse_levels,
        chunk_px,
    )
    # 4. Finer levels, finest first (a computed level averages the one before it).
    previous = None
    for plan in sparse_levels:
        kept = {native.index: decoded_native, native.index + 1: decoded_half}.get(plan.index)
        if kept is not None:
            prune(kept, params.chunk_px, coverage[plan.index], threads)
            previous = kept
        else:
            previous = _write_level(
                reader, group, plan, previous, params, threads, sources, coverage[plan.index]
            )
    return PyramidOutcome(
        tissue_plan, coverage, radius, (mask, fraction, area_mm2), chunk_px, sources.copied
    )


def _first_complete_level(
    levels: list[LevelPlan], mpp: float, tissue_plan: LevelPlan, complete_um: float
) -> LevelPlan:
    """The finest level a sparse store writes complete: the tissue level or a finer one whose
    pixels are at least ``complete_um`` wide."""
    coarse_enough = [
        p for p in levels if mpp * min(p.downsample_x, p.downsample_y) >= complete_um * 0.99
    ]
    return min([tissue_plan, *coarse_enough], key=lambda p: p.index)


def _write_coverage(image: zarr.Group, coverage: dict[int, NDArray[np.bool_]]) -> None:
    """``slidefleet-coverage/<level>``: one uint8 cell per chunk, 1 = written from the slide."""
    group = image.create_group(COVERAGE_GROUP)
    for index, grid in coverage.items():
        array = group.create_array(
            str(index),
            shape=grid.shape,
            dtype="uint8",
            chunks=grid.shape,
            dimension_names=("chunk_y", "chunk_x"),
            fill_value=0,
        )
        array[:] = grid.astype(np.uint8)


def _label_level_from_base(
    base: zarr.Array, target: zarr.Array, factor: int, out_block_px: int
) -> None:
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
                block[np.ix_(rl, cl)],
                block[np.ix_(rl, ch)],
                block[np.ix_(rh, cl)],
                block[np.ix_(rh, ch)],
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
        array = _create_array(
            group, str(level), shape, params.chunk_px, params.zstd_level, ("y", "x"), 0
        )
        _label_level_from_base(base, array, 2**level, out_block_px)
    return n_levels


def _label_levels(count: int, mpp_y: float, mpp_x: float, ds_y: float, ds_x: float) -> list[Frame]:
    return [ngff.level_scale(str(i), mpp_y, mpp_x, ds_y * 2**i, ds_x * 2**i) for i in range(count)]


def _choose_tissue_level(levels: list[LevelPlan], mpp: float, target_mpp: float) -> LevelPlan:
    candidates = [p for p in levels if p.width_px * p.height_px <= _MAX_TISSUE_LEVEL_PX] or [
        levels[-1]
    ]
    return min(
        candidates,
        key=lambda p: abs(math.log(mpp * (p.downsample_x + p.downsample_y) / 2 / target_mpp)),
    )


def _detect_tissue(
    image: zarr.Group, plan: LevelPlan, mpp_y: float, mpp_x: float, params: IngestParams
) -> tuple[NDArray[np.bool_], float, float]:
    """Tissue mask of the stored level ``plan``, its fraction and area (mm²); NoTissue if blank."""
    level = image[str(plan.index)]
    assert isinstance(level, zarr.Array)
    rgb = np.asarray(level[:]).transpose(1, 2, 0)
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
    return mask, fraction, area_mm2


def _write_tissue(
    image: zarr.Group,
    labels: zarr.Group,
    levels: list[LevelPlan],
    mpp_y: float,
    mpp_x: float,
    params: IngestParams,
    plan: LevelPlan,
    detected: tuple[NDArray[np.bool_], float, float] | None,
) -> tuple[float, float]:
    """Write ``labels/tissue`` (detected on ``plan`` unless given); return (fraction, area_mm2)."""
    n_levels = len(levels)
    mask, fraction, area_mm2 = detected or _detect_tissue(image, plan, mpp_y, mpp_x, params)
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


def _write_annotation(
    entry: SlideEntry, reader: SlideReader, labels: zarr.Group, params: IngestParams, n_levels: int
) -> float:
    """Rasterise the ground truth into ``labels/annotation``; return the labelled area in mm²."""
    from engine.annotations import class_map_preset, load_annotation

    info = reader.info
    assert entry.annotation is not None
    try:
        check_input_file(entry.annotation, what="annotation")
    except SlideFleetError as exc:
        raise BadAnnotation(str(exc)) from exc
    class_map = class_map_preset(params.class_map)
    annotation = load_annotation(
        entry.annotation, class_map, slide_width_px=info.width_px, slide_height_px=info.height_px
    )
    downsample = max(1.0, params.annotation_mpp / info.mpp)
    width_px = math.ceil(info.width_px / downsample)
    height_px = math.ceil(info.height_px / downsample)
    group = labels.create_group("annotation")
    base = _create_array(
        group, "0", (height_px, width_px), params.chunk_px, params.zstd_level, ("y", "x"), 0
    )
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
        properties={
            value: {"class": name}
            for value, name in {0: "background", **class_map.label_names}.items()
        },
    )
    return labelled_px * (downsample * info.mpp) ** 2 / 1e6


def _materialised_fraction(coverage: NDArray[np.bool_] | None) -> float:
    return 1.0 if coverage is None or coverage.size == 0 else float(coverage.mean())


def _sparse_provenance(params: IngestParams, pyramid: PyramidOutcome, mpp: float) -> dict[str, Any]:
    """What a sparse store materialised: read by infer to refuse models the margin does not cover."""
    plan = pyramid.tissue_plan
    if not pyramid.coverage:
        return {"enabled": False, "complete_levels": "all"}
    return {
        "enabled": True,
        "margin_um": params.sparse_margin_um,
        "tissue_level": str(plan.index),
        "tissue_level_um": mpp * (plan.downsample_x + plan.downsample_y) / 2,
        "complete_from_um": params.sparse_complete_um,
        "dilation_px_at_tissue_level": pyramid.margin_px,
        "chunk_px": params.chunk_px,
        "chunk_px_by_level": {
            str(index): pyramid.chunk_px[index] for index in sorted(pyramid.coverage)
        },
        "coverage_group": COVERAGE_GROUP,
        "sparse_levels": [str(index) for index in sorted(pyramid.coverage)],
        "fill_value": 255,
        "note": "levels listed in sparse_levels hold only the chunks set in coverage_group/<level>; the "
        "others read as the fill value (white glass). The other levels are complete.",
    }


def convert_slide(entry: SlideEntry, layout: FleetLayout, params: IngestParams) -> IngestResult:
    """Convert one slide (or reuse its complete, up-to-date store). Raises SlideFleetError subclasses."""
    started = time.perf_counter()
    store_path = layout.slide_store(entry.slide_id)
    check_input_file(entry.path)  # a folder, device, FIFO, socket or symlink loop: refused at once
    key = input_key(entry, params, cache=HashCache(layout.hash_cache))
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
            threads = params.cpus_per_slide or default_threads()
            counting = CountingReader(reader)
            pyramid = _write_rgb_pyramid(counting, image, levels, params, threads)
            labels = image.create_group("labels")
            tissue_fraction, tissue_area_mm2 = _write_tissue(
                image,
                labels,
                levels,
                info.mpp_y,
                info.mpp_x,
                params,
                pyramid.tissue_plan,
                pyramid.tissue,
            )
            if pyramid.coverage:
                _write_coverage(image, pyramid.coverage)
            label_names = ["tissue"]
            annotated_area_mm2: float | None = None
            if entry.annotation is not None:
                try:
                    annotated_area_mm2 = _write_annotation(
                        entry, reader, labels, params, len(levels)
                    )
                    label_names.append("annotation")
                except BadAnnotation as exc:
                    annotation_error = exc
                    if "annotation" in labels:
                        del labels["annotation"]
            labels.attrs["ome"] = ngff.labels_group_attributes(label_names)
            scales = [
                ngff.level_scale(
                    str(p.index), info.mpp_y, info.mpp_x, p.downsample_y, p.downsample_x
                )
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
                annotation_path=str(entry.annotation)
                if entry.annotation and annotation_error is None
                else None,
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
                    {
                        "path": str(p.index),
                        "native_level": p.native_level,
                        "downsample_x": p.downsample_x,
                        "downsample_y": p.downsample_y,
                        "materialised_fraction": _materialised_fraction(
                            pyramid.coverage.get(p.index)
                        ),
                        "chunk_px": pyramid.chunk_px[p.index],
                        "chunks": "source-jpeg"
                        if p.index in pyramid.source_tiles
                        else params.codec,
                        "source_tiles": pyramid.source_tiles.get(p.index),
                    }
                    for p in levels
                ],
                "sparse": _sparse_provenance(params, pyramid, info.mpp),
                "decoded_megapixels": counting.decoded_px / 1e6,
                "orientation": "as stored (OpenSlide's frame; TIFF Orientation tags are not applied)",
                "annotation_path": result.annotation_path,
                "ingest_params": params.model_dump(),
                "params_hash": key["params_hash"],
            }
            seconds = time.perf_counter() - started
            result_fields = {**result.table_row(), "seconds": seconds}
            decoded_megapixels = counting.decoded_px / 1e6
            write_completion(
                tmp_path,
                {
                    "input_key": key,
                    "result": result_fields,
                    "engine_version": __version__,
                    "annotation_error": None
                    if annotation_error is None
                    else {
                        "error_type": type(annotation_error).__name__,
                        "message": str(annotation_error),
                    },
                },
            )
    return IngestResult(
        **{
            **result_fields,
            "annotation_error": annotation_error,
            "decoded_megapixels": decoded_megapixels,
        }
    )
