"""Chunk files written by ingest's threads are the files zarr itself writes, byte for byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import ZstdCodec

from engine.store.chunk_files import ChunkFiles
from engine.store.jpeg_codec import JpegCodec


def _pixels(shape: tuple[int, ...]) -> np.ndarray:
    """Smooth texture with glass (all-255) chunks, a glass edge chunk and 255s inside tissue."""
    rng = np.random.default_rng(3)
    coarse = rng.integers(0, 256, (*shape[:-2], shape[-2] // 37 + 1, shape[-1] // 37 + 1))
    texture = np.repeat(np.repeat(coarse, 37, axis=-2), 37, axis=-1)[..., : shape[-2], : shape[-1]]
    pixels = np.clip(texture + rng.integers(-9, 10, shape), 0, 255).astype(np.uint8)
    pixels[..., :512, 512:1024] = 255  # a whole glass chunk
    pixels[..., 1024:, 1024:] = 255  # a glass edge chunk (partial)
    return pixels


def _files(array_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(array_dir)): p.read_bytes()
        for p in sorted(array_dir.rglob("*"))
        if p.is_file() and p.name != "zarr.json"
    }


@pytest.mark.parametrize("shape", [(3, 1100, 1300), (1100, 1300)])
@pytest.mark.parametrize("level", [1, 5])
def test_blocks_written_here_give_zarrs_own_files(
    tmp_path: Path, shape: tuple[int, ...], level: int
) -> None:
    pixels = _pixels(shape)
    chunks = (*shape[:-2], 512, 512)
    arrays = {}
    for name in ("by_zarr", "here"):
        arrays[name] = zarr.create_array(
            tmp_path / name,
            shape=shape,
            chunks=chunks,
            dtype="uint8",
            fill_value=255,
            compressors=[ZstdCodec(level=level)],
        )
    arrays["by_zarr"][...] = pixels
    files = ChunkFiles.of(arrays["here"])
    assert files is not None
    for y0 in range(0, shape[-2], 1024):  # blocks of 2x2 chunks, edges included
        for x0 in range(0, shape[-1], 1024):
            files.write_block(y0, x0, pixels[..., y0 : y0 + 1024, x0 : x0 + 1024])
    ours, zarrs = _files(tmp_path / "here"), _files(tmp_path / "by_zarr")
    assert ours.keys() == zarrs.keys() and len(ours) == 3 * 3 - 2  # two glass chunks: no file
    assert ours == zarrs
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "here")[...], pixels)


def test_other_layouts_and_misaligned_blocks_are_left_to_zarr(tmp_path: Path) -> None:
    jpeg = zarr.create_array(
        tmp_path / "jpeg",
        shape=(3, 64, 64),
        chunks=(3, 32, 32),
        dtype="uint8",
        fill_value=255,
        serializer=JpegCodec(quality=90),
        compressors=None,
    )
    in_memory = zarr.create_array(
        zarr.storage.MemoryStore(), shape=(64, 64), chunks=(32, 32), dtype="uint8", fill_value=0
    )
    assert ChunkFiles.of(jpeg) is None and ChunkFiles.of(in_memory) is None
    plain = zarr.create_array(
        tmp_path / "plain", shape=(64, 64), chunks=(32, 32), dtype="uint8", fill_value=0
    )
    files = ChunkFiles.of(plain)
    assert files is not None
    with pytest.raises(ValueError, match="not aligned"):
        files.write_block(16, 0, np.ones((32, 32), np.uint8))
