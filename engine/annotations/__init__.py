"""Ground-truth annotations: readers for ASAP XML, QuPath GeoJSON, NCRF JSON and label masks,
and a streaming rasteriser that produces labels block by block.

>>> ann = load_annotation(path, class_map_preset("camelyon16"),
...                       slide_width_px=97792, slide_height_px=221184)
>>> block = ann.rasterise_block(0, 0, 1024, 1024, downsample=16)   # uint8 labels

Layout: parsers (:mod:`.asap`, :mod:`.geojson`, :mod:`.ncrf`) turn decoded files into
:class:`SourceShape`; :mod:`.classmap` says which classes count; :mod:`.annotation` builds an
:class:`Annotation` from shapes or a mask array; :mod:`.rasterise` fills blocks; :mod:`.load`
is the only module that touches files.
"""

from engine.annotations.annotation import (
    Annotation,
    MaskAnnotation,
    PolygonAnnotation,
    build_mask_annotation,
    build_polygon_annotation,
    check_bounds,
    infer_mask_downsample,
)
from engine.annotations.asap import parse_asap_xml
from engine.annotations.classmap import (
    CLASS_MAP_PRESETS,
    HOLE,
    UNCLASSIFIED,
    ClassMap,
    Target,
    class_map_preset,
)
from engine.annotations.geojson import parse_geojson
from engine.annotations.load import (
    AnnotationFormat,
    detect_format,
    load_annotation,
    read_label_mask,
    roi_origin_from_name,
)
from engine.annotations.ncrf import parse_ncrf_json
from engine.annotations.rasterise import fill_even_odd, pixel_centres
from engine.annotations.shapes import AnnotationWarning, ParsedShapes, SourceShape

__all__ = [
    "CLASS_MAP_PRESETS",
    "HOLE",
    "UNCLASSIFIED",
    "Annotation",
    "AnnotationFormat",
    "AnnotationWarning",
    "ClassMap",
    "MaskAnnotation",
    "ParsedShapes",
    "PolygonAnnotation",
    "SourceShape",
    "Target",
    "build_mask_annotation",
    "build_polygon_annotation",
    "check_bounds",
    "class_map_preset",
    "detect_format",
    "fill_even_odd",
    "infer_mask_downsample",
    "load_annotation",
    "parse_asap_xml",
    "parse_geojson",
    "parse_ncrf_json",
    "pixel_centres",
    "read_label_mask",
    "roi_origin_from_name",
]
