"""``slidefleet.jpeg``: a zarr v3 array-to-bytes codec storing each (3, y, x) uint8 chunk as one JPEG.

The compact storage mode (``ingest.codec: jpeg``). zarr 3 refuses a plain numcodecs codec as the
serializer, so this registered codec is the serializer itself: a chunk is transposed to (y, x, 3)
and encoded by libjpeg-turbo (imagecodecs), 4:4:4 unless ``subsampling`` says otherwise. Readers
need this codec (it is registered on import of :mod:`engine.store` and through the
``zarr.codecs`` entry point of this package); lossless zstd stays the default, readable anywhere.

In *source* mode (``quality`` None, configuration ``{"source_tiles": true}``) the chunks are the
slide's own JPEG tiles, copied by ingest (:mod:`engine.ingest.source_tiles`): decoding is the
same, and zarr never encodes into such an array.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import imagecodecs
import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.core.common import JSON, parse_named_configuration
from zarr.registry import register_codec

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec

CODEC_NAME = "slidefleet.jpeg"


@dataclass(frozen=True)
class JpegCodec(ArrayBytesCodec):
    """JPEG chunks of a (3, y, x) uint8 RGB array; ``quality`` 1–100, or None for the slide's own tiles."""

    is_fixed_size = False

    quality: int | None

    def __init__(self, *, quality: int | None = 90, source_tiles: bool = False) -> None:
        if source_tiles:
            object.__setattr__(self, "quality", None)
            return
        if quality is None or not 1 <= int(quality) <= 100:
            raise ValueError(f"JPEG quality must be 1–100, got {quality}")
        object.__setattr__(self, "quality", int(quality))

    @property
    def holds_source_tiles(self) -> bool:
        """Whether the chunks are the slide's own JPEG tiles (source mode), not encoded by zarr."""
        return self.quality is None

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, configuration = parse_named_configuration(data, CODEC_NAME, require_configuration=False)
        return cls(**(configuration or {}))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        if self.holds_source_tiles:
            return {"name": CODEC_NAME, "configuration": {"source_tiles": True}}
        return {"name": CODEC_NAME, "configuration": {"quality": self.quality}}

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        rgb = imagecodecs.jpeg8_decode(chunk_bytes.as_numpy_array().tobytes())
        chw = np.ascontiguousarray(rgb.reshape(rgb.shape[0], rgb.shape[1], -1).transpose(2, 0, 1))
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(chw.reshape(chunk_spec.shape))  # type: ignore[arg-type]

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        if self.quality is None:  # source mode (narrowed for the encoder below)
            raise ValueError(
                f"{CODEC_NAME}: this array holds the slide's own JPEG tiles, copied by ingest; "
                "it is never written through zarr"
            )
        chw = np.asarray(chunk_array.as_numpy_array(), dtype=np.uint8)
        if chw.ndim != 3 or chw.shape[0] != 3:
            raise ValueError(f"{CODEC_NAME} stores (3, y, x) RGB chunks, got shape {chw.shape}")
        encoded = imagecodecs.jpeg8_encode(
            np.ascontiguousarray(chw.transpose(1, 2, 0)), level=self.quality, subsampling="444"
        )
        return chunk_spec.prototype.buffer.from_bytes(encoded)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        raise NotImplementedError


register_codec(CODEC_NAME, JpegCodec)
