"""OpenSlide-backed reader (SVS, TIFF, NDPI, MRXS, DICOM, ...)."""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np
import openslide
from numpy.typing import NDArray
from openslide import _convert, lowlevel

from engine.errors import SlideNotFound, SlideUnreadable
from engine.slides.base import SlideInfo, check_mpp


def _float_property(properties: dict[str, str], key: str) -> float | None:
    raw = properties.get(key)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        return None


def rgba_to_rgb_on_white(rgba: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Composite OpenSlide's premultiplied RGBA onto white glass.

    OpenSlide returns premultiplied ARGB; pixels outside the scanned area have alpha 0. On a
    white background the composite of a premultiplied colour is ``rgb + (255 - alpha)``. Opaque
    pixels (alpha 255) are returned unchanged, so level-0 pixels equal ``read_region`` exactly.
    """
    rgb = rgba[..., :3]
    alpha = rgba[..., 3]
    if bool((alpha == 255).all()):
        return np.ascontiguousarray(rgb)
    out = rgb.astype(np.uint16) + (255 - alpha.astype(np.uint16))[..., None]
    return np.minimum(out, 255).astype(np.uint8)


class OpenSlideReader:
    """A slide opened with OpenSlide; errors become :mod:`engine.errors` types."""

    def __init__(self, path: Path, *, mpp_override: float | None = None) -> None:
        path = Path(path)
        if not path.exists():
            raise SlideNotFound(f"{path}: slide file not found.")
        try:
            self._slide = openslide.OpenSlide(str(path))
        except openslide.OpenSlideUnsupportedFormatError as exc:
            raise SlideUnreadable(
                f"{path}: OpenSlide does not recognise this file as a slide ({exc or 'unsupported format'})."
            ) from exc
        except openslide.OpenSlideError as exc:
            raise SlideUnreadable(f"{path}: OpenSlide cannot open this slide: {exc}") from exc
        props = dict(self._slide.properties)
        width_px, height_px = self._slide.dimensions
        if width_px <= 0 or height_px <= 0:
            self._slide.close()
            raise SlideUnreadable(
                f"{path}: the slide has an empty image ({width_px} x {height_px} px)."
            )
        try:
            mpp_x, mpp_y, mpp_source = check_mpp(
                _float_property(props, openslide.PROPERTY_NAME_MPP_X),
                _float_property(props, openslide.PROPERTY_NAME_MPP_Y),
                override=mpp_override,
                path=str(path),
            )
        except Exception:
            self._slide.close()
            raise
        self.info = SlideInfo(
            path=str(path),
            vendor=props.get(openslide.PROPERTY_NAME_VENDOR, "unknown"),
            width_px=int(width_px),
            height_px=int(height_px),
            mpp_x=mpp_x,
            mpp_y=mpp_y,
            mpp_source=mpp_source,
            level_dimensions_px=tuple((int(w), int(h)) for w, h in self._slide.level_dimensions),
            level_downsamples=tuple(float(d) for d in self._slide.level_downsamples),
            objective_power=_float_property(props, openslide.PROPERTY_NAME_OBJECTIVE_POWER),
        )

    def read_region_rgb(
        self, x_level0_px: int, y_level0_px: int, level: int, width_px: int, height_px: int
    ) -> NDArray[np.uint8]:
        """RGB pixels of a region of ``level``; decode errors raise :class:`SlideUnreadable`."""
        try:
            region = self._slide.read_region(
                (x_level0_px, y_level0_px), level, (width_px, height_px)
            )
        except openslide.OpenSlideError as exc:
            raise SlideUnreadable(
                f"{self.info.path}: tile data is corrupt at level {level}, "
                f"x={x_level0_px}, y={y_level0_px} (level-0 px): {exc}"
            ) from exc
        return rgba_to_rgb_on_white(np.asarray(region))

    def read_region_planar(
        self, x_level0_px: int, y_level0_px: int, level: int, width_px: int, height_px: int
    ) -> NDArray[np.uint8]:
        """``(3, height, width)`` RGB of a region: the bytes of :meth:`read_region_rgb`, in the
        planar (c, y, x) layout the stores keep.

        OpenSlide decodes straight into a numpy buffer of premultiplied ARGB words, and an opaque
        region (alpha 255 everywhere: premultiplied equals plain) is split into its three planes
        in one pass, with no PIL image and no interleaved copy in between (measured: the
        conversion's reads 1.3-1.5x faster). A region with transparent pixels goes through
        openslide-python's own un-premultiplication and the same white compositing, so the result
        is byte-identical either way.
        """
        handle = getattr(self._slide, "_osr", None)
        raw_read = getattr(lowlevel, "_read_region", None)
        if handle is None or raw_read is None or sys.byteorder != "little":
            rgb = self.read_region_rgb(x_level0_px, y_level0_px, level, width_px, height_px)
            return np.ascontiguousarray(rgb.transpose(2, 0, 1))
        words = np.empty((height_px, width_px), np.uint32)
        try:
            raw_read(
                handle,
                words.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)),
                x_level0_px,
                y_level0_px,
                level,
                width_px,
                height_px,
            )
        except openslide.OpenSlideError as exc:
            raise SlideUnreadable(
                f"{self.info.path}: tile data is corrupt at level {level}, "
                f"x={x_level0_px}, y={y_level0_px} (level-0 px): {exc}"
            ) from exc
        if bool((words >= 0xFF000000).all()):
            bgra = words.view(np.uint8).reshape(height_px, width_px, 4)  # little-endian ARGB
            planar = np.empty((3, height_px, width_px), np.uint8)
            for channel, byte in enumerate((2, 1, 0)):
                planar[channel] = bgra[..., byte]
            return planar
        _convert.argb2rgba(words)  # in place, exactly as openslide-python's read_region does
        rgba = words.view(np.uint8).reshape(height_px, width_px, 4)
        return np.ascontiguousarray(rgba_to_rgb_on_white(rgba).transpose(2, 0, 1))

    def close(self) -> None:
        self._slide.close()

    def __enter__(self) -> OpenSlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_slide(path: Path | str, *, mpp_override: float | None = None) -> OpenSlideReader:
    """Open a slide file, validating its microns-per-pixel (see :func:`check_mpp`)."""
    return OpenSlideReader(Path(path), mpp_override=mpp_override)
