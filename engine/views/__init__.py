"""Views: what people look at. Per-slide heatmaps and three-panel figures (PNG), QuPath GeoJSON
of the predicted regions, and a self-contained cohort ``report.html``, under
``ROOT/views/<model_id>/``.

Layout: :mod:`.grid` places levels in µm and picks the level to read; :mod:`.render` (colours),
:mod:`.panels` (figure composition), :mod:`.regions` (mask and outlines), :mod:`.geojson`,
:mod:`.charts` and :mod:`.report` (HTML) are pure; :mod:`.inputs` reads stores and tables,
:mod:`.slide` draws one slide and :mod:`.api` runs a cohort.
"""

from engine.views.api import REPORT_FILE, ViewsReport, render_views
from engine.views.geojson import (
    feature_collection,
    region_feature,
    regions_feature_collection,
    write_geojson,
)
from engine.views.grid import level_for_scale, level_for_size
from engine.views.params import ViewParams
from engine.views.regions import (
    RegionRule,
    SlideRegions,
    predicted_mask,
    region_outlines,
    slide_regions,
)
from engine.views.render import (
    class_map,
    class_map_rgba,
    colourise,
    composite,
    display_range,
    display_values,
    smooth_nan,
)
from engine.views.report import ReportInputs, build_report_html
from engine.views.slide import SlideSettings, SlideViews, render_slide

__all__ = [
    "REPORT_FILE",
    "RegionRule",
    "ReportInputs",
    "SlideRegions",
    "SlideSettings",
    "SlideViews",
    "ViewParams",
    "ViewsReport",
    "build_report_html",
    "class_map",
    "class_map_rgba",
    "colourise",
    "composite",
    "display_range",
    "display_values",
    "feature_collection",
    "level_for_scale",
    "level_for_size",
    "predicted_mask",
    "region_feature",
    "region_outlines",
    "regions_feature_collection",
    "render_slide",
    "render_views",
    "slide_regions",
    "smooth_nan",
    "write_geojson",
]

from engine._callable import make_module_callable  # noqa: E402

make_module_callable(__name__, render_views)
