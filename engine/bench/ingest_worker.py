"""Subprocess body of ``bench ingest``: one measurement, JSON on the last stdout line.

``floor MANIFEST ROOT THREADS``: read every native level in the conversion's blocks through
OpenSlide on THREADS threads, and nothing else. ``full|sparse MANIFEST ROOT THREADS``: convert
the slide with ``ingest.sparse`` false / true on THREADS threads.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from engine.ingest.convert import convert_slide
from engine.ingest.levels import regions, run_bounded
from engine.ingest.params import IngestParams
from engine.ingest.pyramid import plan_levels
from engine.manifest import read_manifest
from engine.slides import open_slide
from engine.store import FleetLayout


def _floor(entry_path: Path, params: IngestParams, threads: int) -> tuple[float, float]:
    """(seconds, decoded MP) of reading every native level as a full conversion does."""
    with open_slide(entry_path) as slide:
        levels = [
            p for p in plan_levels(slide.info, params.min_level_px) if p.native_level is not None
        ]
        decoded = 0
        started = time.perf_counter()
        for plan in levels:

            def read(region: tuple[int, int, int, int], plan=plan) -> None:
                y0, y1, x0, x1 = region
                slide.read_region_rgb(
                    round(x0 * plan.downsample_x),
                    round(y0 * plan.downsample_y),
                    plan.native_level,
                    x1 - x0,
                    y1 - y0,
                )

            run_bounded(
                read,
                regions(plan.height_px, plan.width_px, params.block_px, params.chunk_px, None),
                threads,
            )
            decoded += plan.width_px * plan.height_px
        return time.perf_counter() - started, decoded / 1e6


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    mode, manifest_path, root, threads = (
        sys.argv[1],
        Path(sys.argv[2]),
        Path(sys.argv[3]),
        int(sys.argv[4]),
    )
    (entry,) = read_manifest(manifest_path).entries
    # full / sparse: every level decoded and stored as lossless zstd; default: the engine's
    # defaults (sparse, native levels kept as the slide's own JPEG tiles where it has them).
    # verified: the defaults with every copied tile also decoded by OpenSlide and compared.
    if mode == "default":
        params = IngestParams(cpus_per_slide=threads)
    elif mode == "verified":
        params = IngestParams(cpus_per_slide=threads, verify_source_tiles="openslide")
    else:
        params = IngestParams(cpus_per_slide=threads, sparse=mode == "sparse", source_tiles=False)
    store_bytes = None
    level0_fraction = 1.0
    if mode == "floor":
        seconds, decoded_mp = _floor(entry.path, params, threads)
    else:
        started = time.perf_counter()
        result = convert_slide(entry, FleetLayout(root), params)
        seconds = time.perf_counter() - started
        decoded_mp = result.decoded_megapixels
        store_bytes = _tree_bytes(Path(result.store_path))
        import zarr

        levels = zarr.open_group(result.store_path, mode="r").attrs["slidefleet"]["levels"]
        level0_fraction = levels[0]["materialised_fraction"]
    with open_slide(entry.path) as slide:
        megapixels = slide.info.width_px * slide.info.height_px / 1e6
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "mode": mode,
                "seconds": seconds,
                "megapixels": megapixels,
                "decoded_mp": decoded_mp,
                "peak_rss_mib": peak_rss_mib,
                "store_bytes": store_bytes,
                "source_bytes": entry.path.stat().st_size,
                "level0_fraction": level0_fraction,
                "threads": threads,
            }
        )
    )


if __name__ == "__main__":
    main()
