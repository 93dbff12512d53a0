"""Writing pyramid levels in parallel: regions read from OpenSlide or averaged from a finer level.

Every region handed to a thread is aligned to the array's chunks, so no two threads ever write
the same chunk (a partial chunk write is a read-modify-write). OpenSlide's ``read_region`` and
zstd both release the GIL, so ``threads`` regions decode and compress at once; at most
``2 x threads`` regions are in flight, which bounds memory by the block size, not the slide size.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import zarr
from numpy.typing import NDArray

from engine.ingest.pyramid import LevelPlan, downsample_area_2x
from engine.ingest.source_tiles import SourceTileLayout, checked_tile, open_tiles
from engine.ingest.sparse import covered_runs
from engine.slides import SlideReader
from engine.store.chunk_files import ChunkFiles, chunk_file

Region = tuple[int, int, int, int]  # (y0, y1, x0, x1) in level px


def default_threads() -> int:
    """CPUs this process may use: Ray's assignment inside a Ray task, else the CPU affinity."""
    try:
        import ray

        if ray.is_initialized():
            assigned = ray.get_runtime_context().get_assigned_resources().get("CPU")
            if assigned:
                return max(1, int(assigned))
    except Exception:  # noqa: BLE001 - outside a Ray worker there is no assignment to read
        pass
    return max(1, len(os.sched_getaffinity(0)))


class CountingReader:
    """Wraps a reader and counts the pixels decoded (thread-safe), for provenance and benchmarks."""

    def __init__(self, reader: SlideReader) -> None:
        self._reader = reader
        self.info = reader.info
        self._lock = threading.Lock()
        self.decoded_px = 0

    def read_region_rgb(
        self, x_level0_px: int, y_level0_px: int, level: int, width_px: int, height_px: int
    ) -> NDArray[np.uint8]:
        rgb = self._reader.read_region_rgb(x_level0_px, y_level0_px, level, width_px, height_px)
        with self._lock:
            self.decoded_px += width_px * height_px
        return rgb

    def read_region_planar(
        self, x_level0_px: int, y_level0_px: int, level: int, width_px: int, height_px: int
    ) -> NDArray[np.uint8]:
        planar = self._reader.read_region_planar(
            x_level0_px, y_level0_px, level, width_px, height_px
        )
        with self._lock:
            self.decoded_px += width_px * height_px
        return planar

    def count_decoded(self, pixels: int) -> None:
        """Pixels decoded outside OpenSlide (a level stored as the slide's JPEG tiles, read back)."""
        with self._lock:
            self.decoded_px += pixels

    def close(self) -> None:
        self._reader.close()


def run_bounded(work: Callable[[Region], None], regions: Iterable[Region], threads: int) -> None:
    """Run ``work`` on every region with ``threads`` threads and at most ``2 x threads`` queued."""
    if threads <= 1:
        for region in regions:
            work(region)
        return
    pending: deque[Future[None]] = deque()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ingest") as pool:
        try:
            for region in regions:
                while len(pending) >= 2 * threads:
                    pending.popleft().result()
                pending.append(pool.submit(work, region))
            while pending:
                pending.popleft().result()
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def regions(
    height_px: int, width_px: int, block_px: int, chunk_px: int, coverage: NDArray[np.bool_] | None
) -> Iterator[Region]:
    """Chunk-aligned regions of at most ``block_px``² covering the level, or only its covered chunks.

    A block whose chunks are all covered is one region; otherwise each chunk row of the block
    contributes its runs of covered chunks.
    """
    per_block = block_px // chunk_px
    for by in range(0, height_px, block_px):
        for bx in range(0, width_px, block_px):
            y1, x1 = min(by + block_px, height_px), min(bx + block_px, width_px)
            if coverage is None:
                yield by, y1, bx, x1
                continue
            cy0, cx0 = by // chunk_px, bx // chunk_px
            cells = coverage[cy0 : cy0 + per_block, cx0 : cx0 + per_block]
            if not cells.any():
                continue
            if cells.all():
                yield by, y1, bx, x1
                continue
            for row_index, row in enumerate(cells):
                ry0 = by + row_index * chunk_px
                ry1 = min(ry0 + chunk_px, height_px)
                for c0, c1 in covered_runs(row):
                    yield ry0, ry1, bx + c0 * chunk_px, min(bx + c1 * chunk_px, width_px)


class BlockWriter:
    """Writes chunk-aligned ``(c, h, w)`` blocks into a fresh array, leaving chunks that are all
    fill value unstored, exactly as zarr's default ``write_empty_chunks=False`` does.

    zarr decides that per chunk with a generic NaN-aware comparison (``np.array_equal(...,
    equal_nan=True)``), measured at ~10 % of a conversion's busy time for uint8 RGB. Here one
    ``min``/``max`` per chunk decides instead: a block with no all-fill chunk (nearly every block
    of tissue) is written through a handle that skips zarr's check, any other block through the
    default handle, so the stored chunks are the same either way. Lossless zstd arrays on local
    disk skip zarr's write path altogether (:class:`engine.store.chunk_files.ChunkFiles`).
    """

    def __init__(self, array: zarr.Array, chunk_px: int) -> None:
        self._checked = array
        self._unchecked = array.with_config({"write_empty_chunks": True})
        self._chunk_px = chunk_px
        fill = array.fill_value
        self._fill = None if fill is None else np.asarray(fill, array.dtype)
        # Lossless zstd arrays: chunk files encoded and written in this thread (the same bytes).
        self._files = ChunkFiles.of(array)

    def _has_fill_chunk(self, block: NDArray[np.uint8]) -> bool:
        if self._fill is None:
            return False
        step = self._chunk_px
        for cy in range(0, block.shape[-2], step):
            for cx in range(0, block.shape[-1], step):
                chunk = block[..., cy : cy + step, cx : cx + step]
                if chunk.min() == self._fill and chunk.max() == self._fill:
                    return True
        return False

    def write(self, y0: int, x0: int, block: NDArray[np.uint8]) -> None:
        if self._files is not None:
            self._files.write_block(y0, x0, block)
            return
        target = self._checked if self._has_fill_chunk(block) else self._unchecked
        target[..., y0 : y0 + block.shape[-2], x0 : x0 + block.shape[-1]] = block


def copy_native(
    reader: SlideReader,
    array: zarr.Array,
    plan: LevelPlan,
    block_px: int,
    chunk_px: int,
    threads: int,
    coverage: NDArray[np.bool_] | None = None,
) -> None:
    """Copy a native OpenSlide level verbatim (all of it, or its covered chunks)."""
    assert plan.native_level is not None
    native = plan.native_level
    writer = BlockWriter(array, chunk_px)

    def work(region: Region) -> None:
        y0, y1, x0, x1 = region
        writer.write(
            y0,
            x0,
            reader.read_region_planar(
                round(x0 * plan.downsample_x),
                round(y0 * plan.downsample_y),
                native,
                x1 - x0,
                y1 - y0,
            ),
        )

    run_bounded(work, regions(plan.height_px, plan.width_px, block_px, chunk_px, coverage), threads)


def copy_source_tiles(
    reader: SlideReader,
    layout: SourceTileLayout,
    array: zarr.Array,
    threads: int,
    coverage: NDArray[np.bool_] | None = None,
    *,
    decode_check: bool = False,
) -> tuple[int, int]:
    """Store the slide's own JPEG tiles of a native level as the array's chunks (all of them, or
    the covered ones). Returns (tiles, bytes) written. The array's chunks are the source tiles.

    Each tile is checked for corruption before it is stored (:func:`checked_tile`): a tile
    OpenSlide cannot decode fails the slide with OpenSlide's reason, as decoding it would. With
    ``decode_check`` every tile is also decoded both ways and compared."""
    rows, cols = layout.grid_shape
    if tuple(array.chunks[-2:]) != (layout.tile_px, layout.tile_px) or array.shape[-2:] != (
        layout.height_px,
        layout.width_px,
    ):
        raise ValueError(f"array {array.shape}/{array.chunks} does not match the source tiles")
    lock = threading.Lock()
    written = [0, 0]
    with open_tiles(layout) as source:

        def work(region: Region) -> None:
            row = region[0]
            tiles = n_bytes = 0
            for col in range(cols):
                if coverage is not None and not coverage[row, col]:
                    continue
                jpeg = checked_tile(source, reader, row, col, decode=decode_check)
                if jpeg is None:  # the file stores no tile here: it reads as the fill value
                    continue
                path = chunk_file(array, (0, row, col))
                if tiles == 0:
                    path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(jpeg)
                tiles += 1
                n_bytes += len(jpeg)
            with lock:
                written[0] += tiles
                written[1] += n_bytes

        wanted = range(rows) if coverage is None else (r for r in range(rows) if coverage[r].any())
        run_bounded(work, ((row, row + 1, 0, cols) for row in wanted), threads)
    return written[0], written[1]


def downsample_stored(
    source: zarr.Array,
    target: zarr.Array,
    block_px: int,
    chunk_px: int,
    threads: int,
    coverage: NDArray[np.bool_] | None = None,
    count_decoded: Callable[[int], None] | None = None,
) -> None:
    """Fill ``target`` (all of it, or its covered chunks) with the 2x2 area mean of ``source``.

    ``count_decoded`` is told the pixels read, where reading ``source`` decodes the slide's JPEG.
    """
    height_px, width_px = target.shape[-2:]
    writer = BlockWriter(target, chunk_px)

    def work(region: Region) -> None:
        y0, y1, x0, x1 = region
        block = np.asarray(source[:, 2 * y0 : 2 * y1, 2 * x0 : 2 * x1])
        if count_decoded is not None:
            count_decoded(block.shape[-2] * block.shape[-1])
        writer.write(y0, x0, downsample_area_2x(block)[:, : y1 - y0, : x1 - x0])

    run_bounded(work, regions(height_px, width_px, block_px, chunk_px, coverage), threads)


def downsample_chain(
    reader: SlideReader,
    target: zarr.Array,
    native: LevelPlan,
    steps: int,
    block_px: int,
    chunk_px: int,
    threads: int,
    native_target: zarr.Array | None = None,
    half_target: zarr.Array | None = None,
) -> None:
    """Fill ``target`` with ``steps`` successive 2x2 area means of a native level, never storing the
    levels in between unless asked.

    Gives the same pixels as averaging level by level: each native sub-block is a multiple of
    ``2**steps`` px, so every intermediate block has even sides except at the image's own edge,
    where the full computation pads by replication too. With ``native_target``, the decoded
    native pixels are written there as well (sub-blocks are chunk-aligned), so a level that is
    needed anyway is decoded once; :func:`prune` then drops its chunks that are not wanted. With
    ``half_target``, the first 2x mean is written likewise (a native level whose own tiles are
    copied needs no decoded pixels, but the level above it is computed from them).
    """
    native_level = native.native_level
    assert native_level is not None and steps >= 1
    assert half_target is None or (steps >= 2 and half_chain_aligned(block_px, chunk_px, steps))
    height_px, width_px = target.shape[-2:]
    factor = 2**steps
    sub_out = max(1, block_px // factor)
    writer = BlockWriter(target, chunk_px)
    native_writer = None if native_target is None else BlockWriter(native_target, chunk_px)
    half_writer = None if half_target is None else BlockWriter(half_target, chunk_px)

    def work(region: Region) -> None:
        y0, y1, x0, x1 = region
        out = np.empty((3, y1 - y0, x1 - x0), np.uint8)
        for sy in range(y0, y1, sub_out):
            for sx in range(x0, x1, sub_out):
                ey, ex = min(sy + sub_out, y1), min(sx + sub_out, x1)
                ny0, nx0 = sy * factor, sx * factor
                ny1, nx1 = min(ey * factor, native.height_px), min(ex * factor, native.width_px)
                block = reader.read_region_planar(
                    round(nx0 * native.downsample_x),
                    round(ny0 * native.downsample_y),
                    native_level,
                    nx1 - nx0,
                    ny1 - ny0,
                )
                if native_writer is not None:
                    native_writer.write(ny0, nx0, block)
                for step in range(steps):
                    block = downsample_area_2x(block)
                    if step == 0 and half_writer is not None:
                        half_writer.write(ny0 // 2, nx0 // 2, block)
                out[:, sy - y0 : ey - y0, sx - x0 : ex - x0] = block[:, : ey - sy, : ex - sx]
        writer.write(y0, x0, out)

    run_bounded(
        work,
        regions(
            height_px,
            width_px,
            max(block_px // factor, chunk_px) // chunk_px * chunk_px,
            chunk_px,
            None,
        ),
        threads,
    )


def half_chain_aligned(block_px: int, chunk_px: int, steps: int) -> bool:
    """Whether :func:`downsample_chain`'s first 2x means fall on whole chunks of their level."""
    sub_native_px = max(1, block_px // 2**steps) * 2**steps
    return (sub_native_px // 2) % chunk_px == 0


def prune(array: zarr.Array, chunk_px: int, coverage: NDArray[np.bool_], threads: int) -> None:
    """Drop every chunk of ``array`` not set in ``coverage``: it then reads as the fill value.

    Writing a whole chunk equal to the fill value deletes its stored object (zarr's default
    ``write_empty_chunks=False``), so the store ends exactly as if it had never been written.
    """
    height_px, width_px = array.shape[-2:]
    fill = array.fill_value

    def work(region: Region) -> None:
        y0, y1, x0, x1 = region
        array[:, y0:y1, x0:x1] = np.full((array.shape[0], y1 - y0, x1 - x0), fill, array.dtype)

    run_bounded(work, regions(height_px, width_px, chunk_px, chunk_px, ~coverage), threads)
