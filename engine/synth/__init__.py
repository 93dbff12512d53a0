"""Synthetic H&E cohort generator: pyramidal TIFF slides, tumour annotations and a manifest.

Every pixel is a pure function of a small :class:`SlideSpec` and its coordinates, so slides are
written tile by tile at any size, any region can be re-rendered for checks, and a seed gives
byte-identical files.
"""

from engine.synth.annotations_out import TUMOUR_CLASS, write_asap_xml, write_qupath_geojson
from engine.synth.cohort import MANIFEST_COLUMNS, assign_splits, generate_cohort, plan_cohort
from engine.synth.layout import BURDEN_LIMITS, burden_class_of, make_slide_spec
from engine.synth.patches import render_patch
from engine.synth.render import label_region, render_region
from engine.synth.spec import BURDEN_CLASSES, BurdenClass, SlideSpec, StainParams
from engine.synth.texture import GLASS, TISSUE, TUMOUR
from engine.synth.tiff_writer import level_downsamples, write_slide

__all__ = [
    "BURDEN_CLASSES",
    "BURDEN_LIMITS",
    "GLASS",
    "MANIFEST_COLUMNS",
    "TISSUE",
    "TUMOUR",
    "TUMOUR_CLASS",
    "BurdenClass",
    "SlideSpec",
    "StainParams",
    "assign_splits",
    "burden_class_of",
    "generate_cohort",
    "label_region",
    "level_downsamples",
    "make_slide_spec",
    "plan_cohort",
    "render_patch",
    "render_region",
    "write_asap_xml",
    "write_qupath_geojson",
    "write_slide",
]
