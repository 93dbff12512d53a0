"""Native levels stored as the slide's own JPEG tiles, byte for byte: lossless with respect to the slide.

A scanner's SVS or tiled TIFF already holds every native level as JPEG tiles. Decoding them and
re-encoding the pixels losslessly (zstd) stores what the JPEG threw away as noise: measured, 2.3x
the source's bytes for level 0 alone, and JPEG XL lossless cannot get under 1.4x. Copying the
tiles instead stores exactly the source's bytes for the chunks a store keeps, and the pixels a
reader decodes are the ones OpenSlide decodes from the same bytes (both use libjpeg-turbo).

Each tile becomes one chunk of the level's array (chunks = the source tile, ``slidefleet.jpeg``
codec in source mode). A TIFF tile is an abbreviated JPEG whose tables live in the page's
``JPEGTables`` tag and whose colour space is given by the TIFF ``Photometric`` tag, not by the
stream. :func:`standalone_jpeg` makes each chunk a complete JPEG any decoder reads alone: the
tables are put in front, and an Adobe APP14 marker states the colour transform (Aperio writes
RGB components without one, which a decoder would otherwise take for YCbCr).

Used only where that is exactly what OpenSlide reads: Aperio SVS and generic tiled TIFF, a level
whose TIFF page is tiled, 8-bit, 3 interleaved samples, JPEG-compressed, with square tiles, and
whose first, middle and last tiles decode to OpenSlide's own pixels (checked at ingest). Any
other level (NDPI, MRXS, DICOM, other compressions, grey slides) is decoded and re-encoded as before.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile

from engine.errors import SourceTileMismatch
from engine.slides import SlideReader

logger = logging.getLogger(__name__)

# OpenSlide vendors whose levels are plain TIFF pages read tile by tile.
_TIFF_VENDORS = frozenset({"aperio", "generic-tiff"})
_JPEG = 7  # TIFF Compression
_PHOTOMETRIC_RGB, _PHOTOMETRIC_YCBCR = 2, 6
_SOI, _SOS, _APP0, _APP14 = 0xD8, 0xDA, 0xE0, 0xEE
# Start-of-frame markers (baseline, extended, progressive, lossless; Huffman and arithmetic).
_SOF_MARKERS = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
# Adobe APP14 colour transform: 0 = components are RGB, 1 = YCbCr.
_ADOBE_TRANSFORM = {_PHOTOMETRIC_RGB: 0, _PHOTOMETRIC_YCBCR: 1}


class NotStandaloneJpeg(ValueError):
    """A tile is not a JPEG stream this module can make standalone."""


@dataclass(frozen=True)
class SourceTileLayout:
    """Where one native level's JPEG tiles sit in the slide file."""

    path: Path
    native_level: int
    page_index: int
    tile_px: int
    width_px: int
    height_px: int
    offsets: tuple[int, ...]
    byte_counts: tuple[int, ...]
    jpeg_tables: bytes | None
    adobe_transform: int
    downsample_yx: tuple[float, float]  # level-0 px per pixel of this level (OpenSlide's)

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(rows, columns) of tiles."""
        return -(-self.height_px // self.tile_px), -(-self.width_px // self.tile_px)

    @property
    def source_bytes(self) -> int:
        return sum(self.byte_counts)

    def provenance(self, tiles_written: int, bytes_written: int) -> dict[str, object]:
        return {
            "page": self.page_index,
            "tile_px": self.tile_px,
            "colour": "rgb" if self.adobe_transform == 0 else "ycbcr",
            "tiles_written": tiles_written,
            "bytes_written": bytes_written,
        }


def _segments(stream: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, start, end) of every marker segment between SOI and SOS (SOS not included)."""
    if stream[:2] != b"\xff\xd8":
        raise NotStandaloneJpeg("no JPEG start-of-image marker")
    at = 2
    while at + 4 <= len(stream):
        if stream[at] != 0xFF:
            raise NotStandaloneJpeg(f"expected a marker at byte {at}")
        marker = stream[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == _SOS:
            return
        length = int.from_bytes(stream[at + 2 : at + 4], "big")
        yield marker, at, at + 2 + length
        at += 2 + length
    raise NotStandaloneJpeg("no start-of-scan marker")


def _adobe_segment(transform: int) -> bytes:
    # APP14 "Adobe": length 14, version 100, flags0 0, flags1 0, colour transform.
    return b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00" + bytes([transform])


def standalone_jpeg(tile: bytes, jpeg_tables: bytes | None, adobe_transform: int) -> bytes:
    """A complete JPEG of one TIFF tile: ``JPEGTables`` first, the colour transform declared.

    Any JFIF APP0 or Adobe APP14 segment of the tile or tables is replaced by one Adobe segment
    with ``adobe_transform`` (0 = RGB components, 1 = YCbCr), which is what the TIFF's
    Photometric tag says and what decoders otherwise guess from (a JFIF marker means YCbCr).
    """
    body = tile
    if jpeg_tables is not None:
        if jpeg_tables[:2] != b"\xff\xd8" or jpeg_tables[-2:] != b"\xff\xd9":
            raise NotStandaloneJpeg("JPEGTables is not an SOI…EOI table stream")
        body = jpeg_tables[:-2] + tile[2:]
    kept = bytearray(b"\xff\xd8")
    kept += _adobe_segment(adobe_transform)
    last = 2
    for marker, start, end in _segments(body):
        if marker in (_APP0, _APP14) and body[start + 4 : start + 9] in (b"JFIF\x00", b"Adobe"):
            kept += body[last:start]
            last = end
    kept += body[last:]
    return bytes(kept)


def _page_layout(
    path: Path,
    native_level: int,
    page_index: int,
    page: tifffile.TiffPage,
    downsample_yx: tuple[float, float],
) -> SourceTileLayout | None:
    if not (
        page.is_tiled
        and page.compression == _JPEG
        and page.photometric in _ADOBE_TRANSFORM
        and page.samplesperpixel == 3
        and page.bitspersample == 8
        and page.planarconfig == 1
        and page.tilelength == page.tilewidth
        and page.tilewidth % 16 == 0
        and page.imagedepth == 1
        and all(abs(d - round(d)) < 1e-9 for d in downsample_yx)
    ):
        # A level whose size is not level 0's divided by a whole number is read by OpenSlide at
        # sub-pixel offsets (interpolated), so its pixels are not its tiles: decode it instead.
        return None
    rows, columns = (
        -(-int(page.imagelength) // int(page.tilelength)),
        -(-int(page.imagewidth) // int(page.tilewidth)),
    )
    if len(page.dataoffsets) != rows * columns or len(page.databytecounts) != rows * columns:
        return None
    tables = page.jpegtables
    return SourceTileLayout(
        path=path,
        native_level=native_level,
        page_index=page_index,
        tile_px=int(page.tilewidth),
        width_px=int(page.imagewidth),
        height_px=int(page.imagelength),
        offsets=tuple(int(o) for o in page.dataoffsets),
        byte_counts=tuple(int(c) for c in page.databytecounts),
        jpeg_tables=bytes(tables) if tables is not None else None,
        adobe_transform=_ADOBE_TRANSFORM[int(page.photometric)],
        downsample_yx=downsample_yx,
    )


def find_source_tiles(reader: SlideReader) -> dict[int, SourceTileLayout]:
    """The native levels of ``reader``'s slide whose JPEG tiles can be stored as they are.

    A level qualifies when exactly one tiled page of the file has its dimensions, the page is a
    JPEG tiling this module handles, and sample tiles decode to OpenSlide's pixels
    (:func:`tiles_match_reader`). Every other level is absent and gets decoded as before.
    """
    info = reader.info
    if info.vendor not in _TIFF_VENDORS:
        return {}
    path = Path(info.path)
    try:
        with tifffile.TiffFile(path) as tif:
            pages = [(i, p) for i, p in enumerate(tif.pages) if isinstance(p, tifffile.TiffPage)]
            by_size: dict[tuple[int, int], list[tuple[int, tifffile.TiffPage]]] = {}
            for index, page in pages:
                if page.is_tiled:
                    by_size.setdefault((int(page.imagewidth), int(page.imagelength)), []).append(
                        (index, page)
                    )
            found: dict[int, SourceTileLayout] = {}
            for level, dims in enumerate(info.level_dimensions_px):
                candidates = by_size.get((int(dims[0]), int(dims[1])), [])
                if len(candidates) != 1:
                    continue
                downsample_yx = (info.height_px / dims[1], info.width_px / dims[0])
                layout = _page_layout(path, level, *candidates[0], downsample_yx)
                if layout is not None:
                    found[level] = layout
    except Exception:  # noqa: BLE001 - any TIFF this module cannot map is decoded as before
        logger.debug("%s: no source tiles (the TIFF could not be mapped)", path, exc_info=True)
        return {}
    return {level: layout for level, layout in found.items() if tiles_match_reader(layout, reader)}


@contextmanager
def open_tiles(layout: SourceTileLayout) -> Iterator[TileSource]:
    fd = os.open(layout.path, os.O_RDONLY)
    try:
        yield TileSource(layout, fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class TileSource:
    """Reads standalone JPEG tiles of one level (``os.pread``: safe from many threads)."""

    layout: SourceTileLayout
    fd: int

    def tile(self, row: int, col: int) -> bytes | None:
        """The standalone JPEG of tile (row, col), or None where the file stores no tile."""
        layout = self.layout
        index = row * layout.grid_shape[1] + col
        count = layout.byte_counts[index]
        if count == 0:
            return None
        raw = os.pread(self.fd, count, layout.offsets[index])
        if len(raw) != count:
            raise OSError(f"the file ends inside tile {index} (truncated?)")
        return standalone_jpeg(raw, layout.jpeg_tables, layout.adobe_transform)


def decode_planar(jpeg: bytes) -> np.ndarray:
    """(3, h, w) uint8 pixels of a standalone JPEG, as the store's codec decodes them."""
    rgb = imagecodecs.jpeg8_decode(jpeg)
    return np.ascontiguousarray(rgb.reshape(rgb.shape[0], rgb.shape[1], -1).transpose(2, 0, 1))


def _sample_tiles(layout: SourceTileLayout) -> list[tuple[int, int]]:
    stored = [i for i, count in enumerate(layout.byte_counts) if count > 0]
    if not stored:
        return []
    picks = sorted({stored[0], stored[len(stored) // 2], stored[-1]})
    return [divmod(i, layout.grid_shape[1]) for i in picks]


def read_tile_region(
    layout: SourceTileLayout, reader: SlideReader, row: int, col: int
) -> np.ndarray:
    """OpenSlide's (3, h, w) pixels of tile (row, col), clipped to the level (raises
    :class:`engine.errors.SlideUnreadable` with OpenSlide's reason where it cannot decode it)."""
    t = layout.tile_px
    return reader.read_region_planar(
        round(col * t * layout.downsample_yx[1]),
        round(row * t * layout.downsample_yx[0]),
        layout.native_level,
        min(t, layout.width_px - col * t),
        min(t, layout.height_px - row * t),
    )


def _decodes_as(jpeg: bytes, expected: np.ndarray, tile_px: int) -> bool:
    try:
        pixels = decode_planar(jpeg)
    except Exception:  # noqa: BLE001 - a stream libjpeg refuses
        return False
    height, width = expected.shape[-2:]
    return pixels.shape == (3, tile_px, tile_px) and np.array_equal(
        pixels[:, :height, :width], expected
    )


def tiles_match_reader(layout: SourceTileLayout, reader: SlideReader) -> bool:
    """Whether the first, middle and last stored tiles decode to exactly OpenSlide's pixels."""
    samples = _sample_tiles(layout)
    if not samples:
        return False
    with open_tiles(layout) as source:
        for row, col in samples:
            try:
                jpeg = source.tile(row, col)
            except (NotStandaloneJpeg, OSError):
                return False
            if jpeg is None or not _decodes_as(
                jpeg, read_tile_region(layout, reader, row, col), layout.tile_px
            ):
                return False
    return True


def scan_defect(jpeg: bytes, tile_px: int) -> str | None:
    """Why a standalone JPEG's entropy-coded data is malformed, or None if it looks sound.

    Cheap (no decoding): one frame of ``tile_px``² and 3 components, the stream must end with
    its end-of-image marker, and inside the scan
    every 0xFF byte must be followed by a stuffed zero, a restart marker or another fill byte.
    That is what truncated or overwritten tiles break; libjpeg then only warns and decodes grey
    or garbage, while OpenSlide refuses the tile. A baseline tile with a second scan or other
    markers inside would be flagged too and is then checked by decoding (see
    :func:`checked_tile`).
    """
    if jpeg[-2:] != b"\xff\xd9":
        return "the tile has no JPEG end-of-image marker (truncated?)"
    try:
        segments = list(_segments(jpeg))
    except NotStandaloneJpeg as exc:
        return str(exc)
    header_end = max((end for _, _, end in segments), default=2)
    frames = [(start, end) for marker, start, end in segments if marker in _SOF_MARKERS]
    if len(frames) != 1 or frames[0][1] - frames[0][0] < 10:
        return "the tile has no single frame header"
    start, _ = frames[0]
    height = int.from_bytes(jpeg[start + 5 : start + 7], "big")
    width = int.from_bytes(jpeg[start + 7 : start + 9], "big")
    if (height, width, jpeg[start + 9]) != (tile_px, tile_px, 3):
        return f"the tile's frame is {width}x{height} px with {jpeg[start + 9]} components"
    sos = jpeg.index(b"\xff\xda", header_end)  # after the header (fill bytes may precede it)
    start = sos + 2 + int.from_bytes(jpeg[sos + 2 : sos + 4], "big")
    if start > len(jpeg) - 2:
        return "the tile's scan is empty"
    scan = np.frombuffer(jpeg, np.uint8, count=len(jpeg) - 2 - start, offset=start)
    after = scan[1:][scan[:-1] == 0xFF]
    bad = (after != 0x00) & (after != 0xFF) & ((after < 0xD0) | (after > 0xD7))
    if bad.any():
        return f"marker 0xFF{int(after[bad][0]):02X} inside the tile's compressed data"
    return None


def checked_tile(
    source: TileSource, reader: SlideReader, row: int, col: int, *, decode: bool = False
) -> bytes | None:
    """Tile (row, col) as a standalone JPEG to store, checked for corruption first.

    A tile whose stream is malformed (:func:`scan_defect`, an unreadable header, a short read),
    or every tile when ``decode`` is set, is read through OpenSlide: where OpenSlide cannot
    decode it, the slide fails with OpenSlide's reason (:class:`engine.errors.SlideUnreadable`),
    as a decoding conversion would; where it can, the tile is stored only if it decodes to
    exactly OpenSlide's pixels, else the slide fails with
    :class:`engine.errors.SourceTileMismatch`.
    """
    layout = source.layout
    defect: str | None
    try:
        jpeg = source.tile(row, col)
    except (NotStandaloneJpeg, OSError) as exc:
        jpeg, defect = None, str(exc)
    else:
        if jpeg is None:
            return None
        defect = scan_defect(jpeg, layout.tile_px)
    if defect is None and not decode:
        return jpeg
    if defect is None:
        defect = "it decodes differently"
    expected = read_tile_region(layout, reader, row, col)
    if jpeg is not None and _decodes_as(jpeg, expected, layout.tile_px):
        return jpeg
    raise SourceTileMismatch(
        f"{layout.path}: tile (row {row}, column {col}) of level {layout.native_level} cannot be "
        f"stored as it is ({defect}), though OpenSlide reads it; convert this slide with "
        "ingest.source_tiles: false"
    )


__all__ = [
    "NotStandaloneJpeg",
    "SourceTileLayout",
    "TileSource",
    "checked_tile",
    "decode_planar",
    "find_source_tiles",
    "open_tiles",
    "read_tile_region",
    "scan_defect",
    "standalone_jpeg",
    "tiles_match_reader",
]
