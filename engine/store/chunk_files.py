"""Chunk files of a local zarr v3 array, encoded and written by the calling thread.

Ingest converts a slide on every core it is given. Through zarr's own write path every chunk
went through zarr's single event-loop thread, so two converting threads got 1.28x one thread's
speed (the OpenSlide floor alone gets 1.84x); written here, the zstd encode (which releases the
GIL) and the file write run in the thread that decoded the block.

Only the layout zarr itself writes for such an array is produced, byte for byte: a
``LocalStore`` array with the ``bytes`` serializer and one ``zstd`` compressor (no sharding),
the default chunk key encoding, full-shape chunks (edge chunks padded with the fill value), and
no file for a chunk that is all fill value (zarr's ``write_empty_chunks=False``). Any other
array gets ``None`` from :meth:`ChunkFiles.of` and is written through zarr. A test writes the
same pixels both ways and compares every file.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr
from numpy.typing import NDArray
from zarr.codecs import BytesCodec, ZstdCodec
from zarr.core.chunk_grids import RegularChunkGrid
from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.storage import LocalStore


@dataclass
class ChunkFiles:
    """Writes whole chunks of one fresh array (see the module docstring for which arrays)."""

    directory: Path
    metadata: ArrayV3Metadata
    chunk_shape: tuple[int, ...]
    fill: np.uint8
    codec: numcodecs.Zstd
    _made: set[Path] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def of(cls, array: zarr.Array[Any]) -> ChunkFiles | None:
        """A writer for ``array``, or ``None`` when zarr must write it (another layout)."""
        metadata = array.metadata
        store = array.store_path.store
        if not isinstance(metadata, ArrayV3Metadata) or not isinstance(store, LocalStore):
            return None
        codecs = metadata.codecs
        if (
            array.dtype != np.uint8
            or metadata.fill_value is None
            or len(codecs) != 2
            or type(codecs[0]) is not BytesCodec
            or type(codecs[1]) is not ZstdCodec
            or type(metadata.chunk_key_encoding) is not DefaultChunkKeyEncoding
            or not isinstance(metadata.chunk_grid, RegularChunkGrid)
        ):
            return None
        zstd = codecs[1]
        return cls(
            directory=Path(store.root) / array.store_path.path,
            metadata=metadata,
            chunk_shape=tuple(metadata.chunk_grid.chunk_shape),
            fill=np.uint8(metadata.fill_value),
            codec=numcodecs.Zstd(level=zstd.level, checksum=zstd.checksum),
        )

    def write_block(self, y0: int, x0: int, block: NDArray[np.uint8]) -> None:
        """Write a chunk-aligned block (all leading axes whole) of the array's last two axes."""
        chunk_y, chunk_x = self.chunk_shape[-2:]
        if block.shape[:-2] != self.chunk_shape[:-2] or y0 % chunk_y or x0 % chunk_x:
            raise ValueError(
                f"block {block.shape} at ({y0}, {x0}) is not aligned with chunks {self.chunk_shape}"
            )
        leading = (0,) * (block.ndim - 2)
        for cy in range(0, block.shape[-2], chunk_y):
            for cx in range(0, block.shape[-1], chunk_x):
                piece = block[..., cy : cy + chunk_y, cx : cx + chunk_x]
                coords = (*leading, (y0 + cy) // chunk_y, (x0 + cx) // chunk_x)
                self._write_chunk(coords, piece)

    def _write_chunk(self, coords: tuple[int, ...], piece: NDArray[np.uint8]) -> None:
        path = self.directory / self.metadata.encode_chunk_key(coords)
        if piece.min() == self.fill and piece.max() == self.fill:
            path.unlink(missing_ok=True)  # all fill: no file, as zarr
            return
        if piece.shape == self.chunk_shape:
            chunk = np.ascontiguousarray(piece)
        else:  # an edge chunk is stored whole, padded with the fill value
            chunk = np.full(self.chunk_shape, self.fill, np.uint8)
            chunk[..., : piece.shape[-2], : piece.shape[-1]] = piece
        encoded = self.codec.encode(chunk)
        parent = path.parent
        if parent not in self._made:
            parent.mkdir(parents=True, exist_ok=True)
            with self._lock:
                self._made.add(parent)
        path.write_bytes(encoded)


def chunk_file(array: zarr.Array[Any], coords: tuple[int, ...]) -> Path:
    """The file of chunk ``coords`` of a local zarr v3 array (its default chunk key encoding)."""
    metadata = array.metadata
    store = array.store_path.store
    if not isinstance(metadata, ArrayV3Metadata) or not isinstance(store, LocalStore):
        raise TypeError(f"{array.store_path}: not a local zarr v3 array")
    return Path(store.root) / array.store_path.path / metadata.encode_chunk_key(coords)


__all__ = ["ChunkFiles", "chunk_file"]
