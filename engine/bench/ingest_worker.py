"""Subprocess body of ``bench ingest``: one measurement, JSON on the last stdout line."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from engine.ingest.convert import convert_slide
from engine.ingest.params import IngestParams
from engine.ingest.pyramid import plan_levels
from engine.manifest import read_manifest
from engine.slides import open_slide
from engine.store import FleetLayout


def _floor(entry_path: Path, params: IngestParams) -> float:
    """Read every native level in the conversion's blocks through OpenSlide, and nothing else."""
    with open_slide(entry_path) as slide:
        levels = [p for p in plan_levels(slide.info, params.min_level_px) if p.native_level is not None]
        started = time.perf_counter()
        for plan in levels:
            for y in range(0, plan.height_px, params.block_px):
                for x in range(0, plan.width_px, params.block_px):
                    slide.read_region_rgb(
                        round(x * plan.downsample_x), round(y * plan.downsample_y), plan.native_level,
                        min(params.block_px, plan.width_px - x), min(params.block_px, plan.height_px - y),
                    )
        return time.perf_counter() - started


def main() -> None:
    mode, manifest_path, root = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    (entry,) = read_manifest(manifest_path).entries
    params = IngestParams()
    if mode == "floor":
        seconds = _floor(entry.path, params)
    else:
        started = time.perf_counter()
        convert_slide(entry, FleetLayout(root), params)
        seconds = time.perf_counter() - started
    with open_slide(entry.path) as slide:
        megapixels = slide.info.width_px * slide.info.height_px / 1e6
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "seconds": seconds, "megapixels": megapixels, "peak_rss_mib": peak_rss_mib}))


if __name__ == "__main__":
    main()
