"""Streams a synthetic slide into a pyramidal, tiled JPEG TIFF that OpenSlide opens.

Layout (OpenSlide's generic-TIFF driver): one tiled page per level, full resolution first, each
next page half the size and marked reduced-resolution; resolution tags in pixels per centimetre
give OpenSlide its ``openslide.mpp-x/y``. Tiles are rendered from the spec one at a time,
JPEG-encoded here and handed to tifffile as an iterator of bytes, so memory does not grow with
the slide.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import imagecodecs
import numpy as np
import tifffile

from engine.synth.render import label_region
from engine.synth.spec import SlideSpec
from engine.synth.texture import GRAIN_PERIOD_PX, paint

logger = logging.getLogger(__name__)

_UM_PER_CM = 1e4


def level_downsamples(
    width_px: int, height_px: int, min_level_size_px: int = 512, level_step: int = 2
) -> list[int]:
    """Downsamples 1, step, step², … while the level's longer side stays above ``min_level_size_px``."""
    if level_step < 2:
        raise ValueError(f"level_step must be at least 2, got {level_step}")
    downsamples = [1]
    while max(width_px, height_px) / downsamples[-1] > min_level_size_px:
        downsamples.append(downsamples[-1] * level_step)
    return downsamples


class _TileEncoder:
    """Renders and JPEG-encodes one tile; bare-glass tiles come from a small cache.

    Glass texture repeats with the grain period, so a slide has only a handful of distinct
    glass tiles; caching their bytes makes empty slide area nearly free.
    """

    def __init__(self, spec: SlideSpec, tile_px: int, jpeg_args: dict[str, Any]) -> None:
        self._spec = spec
        self._tile_px = tile_px
        self._jpeg_args = jpeg_args
        self._glass: dict[tuple[int, int], bytes] = {}
        self._lock = threading.Lock()

    def __call__(self, x_px: int, y_px: int, downsample: int) -> bytes:
        spec, t = self._spec, self._tile_px
        labels = label_region(spec, x_px, y_px, t, t, downsample)
        key = (y_px // downsample % GRAIN_PERIOD_PX, x_px // downsample % GRAIN_PERIOD_PX)
        glass = not labels.any()
        if glass:
            with self._lock:
                cached = self._glass.get(key)
            if cached is not None:
                return cached
        rgb = paint(
            labels,
            x0_px=x_px,
            y0_px=y_px,
            downsample=downsample,
            mpp=spec.mpp,
            stain=spec.stain,
            seed=spec.seed,
        )
        data = bytes(imagecodecs.jpeg8_encode(rgb, **self._jpeg_args))
        if glass:
            with self._lock:
                self._glass[key] = data
        return data


def _tiles(
    encode: _TileEncoder,
    downsample: int,
    level_w: int,
    level_h: int,
    tile_px: int,
    pool: ThreadPoolExecutor | None,
    ahead: int,
) -> Iterator[bytes]:
    """Encoded tiles of one level in row-major order (edge tiles rendered whole).

    With a pool, a bounded window of tiles renders and encodes ahead in threads (numpy and
    libjpeg release the GIL); the order, and so the file, is the same as without.
    """
    step = tile_px * downsample
    origins = (
        (tx * step, ty * step)
        for ty in range(math.ceil(level_h / tile_px))
        for tx in range(math.ceil(level_w / tile_px))
    )
    if pool is None:
        for x, y in origins:
            yield encode(x, y, downsample)
        return
    window: deque[Future[bytes]] = deque()
    for x, y in origins:
        window.append(pool.submit(encode, x, y, downsample))
        if len(window) >= ahead:
            yield window.popleft().result()
    while window:
        yield window.popleft().result()


def write_slide(
    spec: SlideSpec,
    path: Path,
    *,
    tile_size_px: int = 256,
    jpeg_quality: int = 85,
    min_level_size_px: int = 512,
    colour_space: Literal["rgb", "ycbcr"] = "rgb",
    workers: int = 1,
    level_step: int = 2,
) -> Path:
    """Write a slide as a pyramidal tiled JPEG TIFF, streaming tile by tile.

    Parameters
    ----------
    spec
        The slide to render.
    path
        Output file (conventionally ``.tif``); parent directories are created.
    tile_size_px
        Tile side in pixels (a multiple of 16).
    jpeg_quality
        JPEG quality, 1–100.
    min_level_size_px
        Levels are added, halving each time, until the longer side is at most this.
    colour_space
        "rgb": JPEG in RGB, no chroma subsampling (PhotometricInterpretation RGB; sharper,
        about twice the size). "ycbcr": YCbCr 4:2:0 as most scanners write. OpenSlide reads both.
    workers
        Threads that render and encode tiles ahead of the writer (1: all in the calling thread).
    level_step
        Downsample between successive levels: 2 (every level), or 4 as Aperio scanners write
        (1x, 4x, 16x, …; the store then computes the levels in between).

    Returns
    -------
    The path written.
    """
    if tile_size_px % 16 or tile_size_px <= 0:
        raise ValueError(f"tile_size_px must be a positive multiple of 16, got {tile_size_px}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    pixels = 0
    px_per_cm = _UM_PER_CM / spec.mpp
    tmp = path.with_name(path.name + ".partial")
    if colour_space == "rgb":
        subsampling = (1, 1)
        jpeg_args = {"level": jpeg_quality, "colorspace": "RGB", "outcolorspace": "RGB"}
    elif colour_space == "ycbcr":
        subsampling = (2, 2)
        jpeg_args = {"level": jpeg_quality, "colorspace": "RGB", "outcolorspace": "YCBCR"}
    else:
        raise ValueError(f"colour_space must be 'rgb' or 'ycbcr', got {colour_space!r}")
    jpeg_args["subsampling"] = subsampling
    encoder = _TileEncoder(spec, tile_size_px, jpeg_args)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="synth-render") if workers > 1 else None
    try:
        with tifffile.TiffWriter(tmp, bigtiff=_needs_bigtiff(spec), byteorder="<") as tif:
            downsamples = level_downsamples(
                spec.width_px, spec.height_px, min_level_size_px, level_step
            )
            for level, ds in enumerate(downsamples):
                level_w = math.ceil(spec.width_px / ds)
                level_h = math.ceil(spec.height_px / ds)
                pixels += level_w * level_h
                tif.write(
                    data=_tiles(encoder, ds, level_w, level_h, tile_size_px, pool, 4 * workers),
                    shape=(level_h, level_w, 3),
                    dtype=np.uint8,
                    tile=(tile_size_px, tile_size_px),
                    photometric="rgb",
                    compression="jpeg",
                    resolution=(px_per_cm / ds, px_per_cm / ds),
                    resolutionunit="CENTIMETER",
                    subfiletype=0 if level == 0 else 1,
                    description=f"SlideFleet synthetic slide {spec.slide_id}"
                    if level == 0
                    else None,
                    metadata=None,
                    software="slidefleet.synth",
                    maxworkers=1,
                    subsampling=subsampling,
                    compressionargs={"outcolorspace": jpeg_args["outcolorspace"]},
                )
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    tmp.replace(path)
    seconds = time.perf_counter() - started
    logger.info(
        "wrote %s (%d x %d px, %.1f MP in all levels) in %.1f s, %.1f MP/s",
        path,
        spec.width_px,
        spec.height_px,
        pixels / 1e6,
        seconds,
        pixels / 1e6 / max(seconds, 1e-9),
    )
    return path


def _needs_bigtiff(spec: SlideSpec) -> bool:
    """BigTIFF when the file could pass 4 GB even uncompressed (all levels, 3 bytes a pixel)."""
    return spec.width_px * spec.height_px * 3 * 4 // 3 > 3_500_000_000
