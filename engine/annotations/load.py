"""Reading annotation files: format detection, parsing, and building an :class:`Annotation`.

Empty annotations: a well-formed file with no area shapes (an empty ASAP ``<Annotations/>``, a
FeatureCollection with no polygons, NCRF with only ``negative`` lists) is a slide with no
annotated region: it rasterises to background everywhere. A zero-byte file is *not* accepted:
it cannot be told apart from a failed export or a truncated copy. A slide without ground truth
should leave the manifest's ``annotation`` column empty instead.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from engine.annotations.annotation import (
    Annotation,
    build_mask_annotation,
    build_polygon_annotation,
)
from engine.annotations.asap import parse_asap_xml
from engine.annotations.classmap import ClassMap
from engine.annotations.geojson import is_geojson, parse_geojson
from engine.annotations.ncrf import is_ncrf, parse_ncrf_json
from engine.annotations.shapes import AnnotationWarning, ParsedShapes
from engine.errors import BadAnnotation

logger = logging.getLogger(__name__)

AnnotationFormat = Literal["asap_xml", "geojson", "ncrf_json", "label_mask"]

MASK_SUFFIXES = frozenset({".png", ".tif", ".tiff"})
JSON_SUFFIXES = frozenset({".json", ".geojson"})
MAX_MASK_PIXELS = 1 << 29
"""Label masks are loaded whole; beyond this many pixels, export the mask at a lower resolution."""

_HTK_ROI_NAME = re.compile(r"_left-(\d+)_top-(\d+)_mag-BASE(?:\.[A-Za-z]+)?$")
_MAGIC_IMAGE = (b"\x89PNG\r\n\x1a\n", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _unsupported_json(obj: Any) -> str:
    """A hint naming the tool a JSON annotation we cannot read probably came from."""
    items = obj if isinstance(obj, list) else [obj]
    first = items[0] if items and isinstance(items[0], dict) else {}
    if "annotation" in first or "cytomine" in str(first.get("class", "")).lower():
        return " (it looks like a Cytomine export)"
    if "content" in first and "slideId" in first:
        return " (it looks like a Sectra export)"
    return ""


def detect_format(path: Path, head: bytes, decoded_json: Any = None) -> AnnotationFormat:
    """The annotation format of a file, from its extension and first bytes (and JSON content).

    Raises
    ------
    BadAnnotation
        Unsupported format.
    """
    suffix = path.suffix.lower()
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if suffix in MASK_SUFFIXES or head.startswith(_MAGIC_IMAGE):
        return "label_mask"
    if suffix == ".xml" or (suffix not in JSON_SUFFIXES and stripped.startswith(b"<")):
        return "asap_xml"
    if decoded_json is not None:
        if is_ncrf(decoded_json):
            return "ncrf_json"
        if is_geojson(decoded_json):
            return "geojson"
        raise BadAnnotation(
            f"unsupported format: {path.name} is JSON but neither GeoJSON nor NCRF"
            f"{_unsupported_json(decoded_json)}; export it as QuPath GeoJSON or ASAP XML"
        )
    raise BadAnnotation(
        f"unsupported format: cannot tell what {path.name} is; supported are ASAP / CAMELYON16 "
        "XML, QuPath GeoJSON, NCRF JSON, and PNG / TIFF label masks"
    )


def _decode_json(data: bytes, path: Path) -> Any:
    try:
        return json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadAnnotation(f"malformed JSON in {path.name} ({exc}); re-export the file") from None


def read_label_mask(path: Path) -> NDArray[np.integer]:
    """A label-mask image as a 2-D integer array (PNG via PIL, TIFF via tifffile).

    Palette images give their indices; RGB images are accepted only when they carry the labels
    in the red channel with green and blue all zero (PANDA) or equal to red (grey saved as RGB).
    """
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tif.series[0].shape
                if int(np.prod(shape)) > MAX_MASK_PIXELS * 4:
                    raise BadAnnotation(f"label mask {path.name} is too large ({shape})")
                array = tif.series[0].asarray()
        else:
            with Image.open(path) as image:
                if image.width * image.height > MAX_MASK_PIXELS:
                    raise BadAnnotation(
                        f"label mask {path.name} is too large ({image.width} x {image.height}); "
                        "export it at a lower resolution"
                    )
                array = np.asarray(image.convert("L") if image.mode == "1" else image)
    except BadAnnotation:
        raise
    except Exception as exc:  # PIL / tifffile raise many types for corrupt files
        raise BadAnnotation(f"cannot read label mask {path.name}: {exc}") from None
    if array.ndim == 3 and array.shape[2] in (3, 4):
        red, green, blue = array[..., 0], array[..., 1], array[..., 2]
        if not (green.any() or blue.any()) or (
            np.array_equal(red, green) and np.array_equal(red, blue)
        ):
            array = red
        else:
            raise BadAnnotation(
                f"{path.name} is a colour image, not a label mask; save one integer class value "
                "per pixel (grey-scale or palette PNG / TIFF)"
            )
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise BadAnnotation(
            f"{path.name} is not a label mask: expected a 2-D integer image, got "
            f"{array.dtype} {array.shape}"
        )
    return array


def roi_origin_from_name(name: str) -> tuple[int, int] | None:
    """Level-0 corner of a HistomicsTK region mask named ``..._left-<x>_top-<y>_mag-BASE.png``.

    HistomicsTK writes region masks at base (level-0) magnification with this suffix; any
    other mask is taken to cover the whole slide.
    """
    match = _HTK_ROI_NAME.search(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _warn_skipped(parsed: ParsedShapes, path: Path) -> None:
    if parsed.skipped:
        listed = ", ".join(f"{n} {kind}" for kind, n in sorted(parsed.skipped.items()))
        warnings.warn(
            f"{path.name}: skipped shapes that are not areas: {listed}",
            AnnotationWarning,
            stacklevel=4,
        )


def load_annotation(
    path: Path, class_map: ClassMap, *, slide_width_px: int, slide_height_px: int
) -> Annotation:
    """Read an annotation file for a slide of the given level-0 size.

    Parameters
    ----------
    path
        ASAP / CAMELYON16 XML, QuPath GeoJSON (``.geojson`` / ``.json``), NCRF JSON, or a PNG /
        TIFF label mask covering the whole slide at an integer-ish downsample (or a HistomicsTK
        region mask named ``..._left-<x>_top-<y>_mag-BASE.png``, placed at that corner).
    class_map
        Which classes (or mask values) become which labels; see :mod:`engine.annotations.classmap`.
    slide_width_px, slide_height_px
        Level-0 size of the slide, to check the annotation fits it and to align a label mask.

    Raises
    ------
    BadAnnotation
        Missing, unreadable, malformed or unsupported file, or shapes that do not fit the slide.
    """
    path = Path(path)
    if not path.is_file():
        raise BadAnnotation(f"annotation file not found: {path}")
    with path.open("rb") as fh:
        head = fh.read(16)
    if not head:
        raise BadAnnotation(
            f"annotation file {path.name} is empty (0 bytes); re-export it, or leave the "
            "manifest's annotation column empty for a slide without ground truth"
        )
    try:
        return _load(path, head, class_map, slide_width_px, slide_height_px)
    except BadAnnotation as exc:
        message = str(exc)
        if path.name in message:
            raise
        raise BadAnnotation(f"{path.name}: {message}") from None


def _parse_polygon_file(path: Path) -> ParsedShapes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadAnnotation(f"cannot read annotation file {path}: {exc}") from None
    stripped = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    is_json = path.suffix.lower() in JSON_SUFFIXES or stripped[:1] in (b"{", b"[")
    decoded = _decode_json(data, path) if is_json else None
    fmt = detect_format(path, data[:16], decoded)
    if fmt == "asap_xml":
        parsed = parse_asap_xml(data)
    elif fmt == "ncrf_json":
        parsed = parse_ncrf_json(decoded)
    else:
        parsed = parse_geojson(decoded)
    logger.debug("%s: %s with %d area shape(s)", path, fmt, len(parsed.shapes))
    return parsed


def read_source_shapes(path: Path) -> ParsedShapes | None:
    """The area shapes of a polygon annotation file as written (before repair, clipping and the
    class map), for annotation QC; ``None`` for a label-mask image, which has no shapes."""
    path = Path(path)
    if not path.is_file():
        raise BadAnnotation(f"annotation file not found: {path}")
    with path.open("rb") as fh:
        head = fh.read(16)
    if path.suffix.lower() in MASK_SUFFIXES or head.startswith(_MAGIC_IMAGE):
        return None
    return _parse_polygon_file(path)


def _load(
    path: Path, head: bytes, class_map: ClassMap, slide_width_px: int, slide_height_px: int
) -> Annotation:
    source = str(path)
    if path.suffix.lower() in MASK_SUFFIXES or head.startswith(_MAGIC_IMAGE):
        return build_mask_annotation(
            read_label_mask(path),
            class_map,
            slide_width_px=slide_width_px,
            slide_height_px=slide_height_px,
            roi_origin_px=roi_origin_from_name(path.name),
            source=source,
        )
    parsed = _parse_polygon_file(path)
    _warn_skipped(parsed, path)
    return build_polygon_annotation(
        parsed.shapes,
        class_map,
        slide_width_px=slide_width_px,
        slide_height_px=slide_height_px,
        source=source,
    )
