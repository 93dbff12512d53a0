"""One slide's QC row: read the store at the QC resolution, measure, and measure its annotation.

I/O lives here; the measures are pure functions in :mod:`engine.qc.slide_quality` and
:mod:`engine.qc.annotation_quality`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import Polygon

from engine.annotations.classmap import HOLE, class_map_preset
from engine.annotations.load import read_source_shapes
from engine.qc.annotation_quality import annotation_quality
from engine.qc.params import QcParams
from engine.qc.slide_quality import slide_quality
from engine.store.frame import Frame, level_for_target, resample_nearest
from engine.store.slide_store import SlideStore


def _nearest_on(source: NDArray[np.uint8], source_level: Frame, target: Frame) -> NDArray[np.uint8]:
    """``source`` sampled at the pixel centres of ``target`` (both levels in the slide's µm)."""
    return resample_nearest(source, source_level.with_shape(*source.shape[-2:]), target)


def _tissue_at(store: SlideStore, level: Frame) -> NDArray[np.bool_]:
    finest = level_for_target(store.label_levels("tissue"), level)
    tissue = np.asarray(store.label("tissue", finest)[:])
    if (tissue.shape[0], tissue.shape[1]) != (level.height_px, level.width_px):
        tissue = _nearest_on(tissue, finest, level)
    return tissue > 0


def _annotation_row(
    store: SlideStore, tissue: NDArray[np.bool_], level: Frame, class_map_name: str
) -> dict[str, Any]:
    path = store.record.get("result", {}).get("annotation_path")
    if not path:
        return {}
    shapes = read_source_shapes(Path(path))
    if shapes is None:  # a label-mask image: no drawn objects to judge
        return {}
    class_map = class_map_preset(class_map_name)
    positive: list[Polygon] = []
    holes: list[Polygon] = []
    for shape in shapes.shapes:
        target = class_map.target_for_names(shape.classes)
        if target is None or target == 0:
            continue
        parts = [p for p in shapely.get_parts(shape.geometry) if isinstance(p, Polygon)]
        (holes if target == HOLE else positive).extend(parts)
    quality = annotation_quality(
        positive,
        holes=holes,
        slide_width_px=store.width_px,
        slide_height_px=store.height_px,
        mpp=store.mpp,
        tissue=tissue,
        tissue_pixel_um=level.scale_x_um,
    )
    return {
        "annotation_objects": quality.objects,
        "annotation_degenerate": quality.degenerate_objects,
        "annotation_outside_slide": quality.objects_outside_slide,
        "annotation_off_tissue": quality.objects_off_tissue,
        "annotation_density_per_mm2": quality.density_per_mm2_tissue,
        "annotation_area_um2_min": quality.area_um2_min,
        "annotation_area_um2_median": quality.area_um2_median,
        "annotation_area_um2_max": quality.area_um2_max,
        "annotation_positive_fraction": quality.positive_fraction_of_tissue,
    }


def qc_slide(
    store_path: Path, params: QcParams, class_map_name: str = "camelyon16"
) -> dict[str, Any]:
    """The QC measures of one committed slide store, as a ``qc`` table row without flags.

    ``class_map_name`` is the ingest class map, which says which annotation classes are positive.

    Raises :class:`StoreIncomplete` for a store without its completion record and
    :class:`BadAnnotation` for an annotation file that cannot be read.
    """
    store = SlideStore.open(store_path)
    level = store.finest_level_not_coarser_than(params.pixel_um)
    rgb = np.asarray(store.image(level)[:]).transpose(1, 2, 0)
    tissue = _tissue_at(store, level)
    pixel_um = (level.scale_x_um + level.scale_y_um) / 2
    quality = slide_quality(np.ascontiguousarray(rgb), tissue, pixel_um, params.quality_params())
    row: dict[str, Any] = {
        "slide_id": store.slide_id,
        "pixel_um": pixel_um,
        "level_path": level.path,
        **{
            name: getattr(quality, name)
            for name in (
                "tissue_area_mm2",
                "tissue_fraction",
                "brightness",
                "contrast",
                "saturation",
                "hematoxylin_od",
                "eosin_od",
                "laplacian_var_median",
                "blurred_tile_fraction",
                "tissue_tiles",
                "pen_fraction",
                "dark_fraction",
                "white_fraction",
            )
        },
        "stain_vector_h": list(quality.stain_vector_h) if quality.stain_vector_h else None,
        "stain_vector_e": list(quality.stain_vector_e) if quality.stain_vector_e else None,
    }
    row.update(_annotation_row(store, tissue, level, class_map_name))
    return row
