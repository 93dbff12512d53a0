"""A whole synthetic cohort: slides, ground truth and a manifest, deterministic for a seed."""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from engine.errors import ConfigError
from engine.synth.annotations_out import write_asap_xml, write_qupath_geojson
from engine.synth.layout import make_slide_spec
from engine.synth.spec import BURDEN_CLASSES, BurdenClass, SlideSpec
from engine.synth.tiff_writer import write_slide

logger = logging.getLogger(__name__)

Split = Literal["train", "calibration", "test"]

MANIFEST_COLUMNS = (
    "slide_id",
    "path",
    "annotation",
    "split",
    "label",
    "burden",
    "annotation_xml",
    "tumor_fraction",
    "tissue_area_um2",
    "tumor_area_um2",
    "width_px",
    "height_px",
    "scanned_mpp",
)
"""Manifest columns; paths are relative to the manifest's folder.

``scanned_mpp`` is informative only: the slides carry their mpp in their own metadata, which
ingest reads and checks. (A column named ``mpp`` would be an override of that, by contract.)
"""

DEFAULT_BURDEN_CYCLE: tuple[BurdenClass, ...] = ("macro", "none", "small", "micro")
"""Burden classes in slide order, repeating: any 4 consecutive slides hold all four."""

# Split of slide i, repeating every 8 slides; paired with the burden cycle, calibration and test
# each get tumour and normal slides.
_SPLIT_PATTERN: tuple[Split, ...] = (
    "train",
    "train",
    "calibration",
    "test",
    "test",
    "calibration",
    "train",
    "train",
)
_DEFAULT_SIDE_RANGE_TILES = (16, 40)  # default slide sides: 4,096–10,240 px in 256 px steps


def assign_splits(n_slides: int) -> list[Split]:
    """Deterministic splits; with 3 or more slides, calibration and test are never empty."""
    splits = [_SPLIT_PATTERN[i % len(_SPLIT_PATTERN)] for i in range(n_slides)]
    if n_slides >= 3:
        needed: Split
        for needed in ("calibration", "test"):
            if needed not in splits:
                last_train = max(i for i, s in enumerate(splits) if s == "train")
                splits[last_train] = needed
    return splits


def plan_cohort(
    n_slides: int,
    seed: int,
    *,
    width_px: int | None = None,
    height_px: int | None = None,
    mpp: float = 0.5,
    burden_cycle: Sequence[BurdenClass] = DEFAULT_BURDEN_CYCLE,
    slide_prefix: str = "synth",
    tissue_fraction: float | None = None,
) -> list[SlideSpec]:
    """Specs of every slide of a cohort (geometry only, no pixels): cheap, for tests and previews.

    Parameters are those of :func:`generate_cohort`.
    """
    if n_slides < 1:
        raise ConfigError(f"n_slides must be at least 1, got {n_slides}")
    if not burden_cycle or any(b not in BURDEN_CLASSES for b in burden_cycle):
        raise ConfigError(f"burden_cycle must be a non-empty sequence of {BURDEN_CLASSES}")
    if width_px is None and height_px is not None:
        width_px = height_px
    if height_px is None and width_px is not None:
        height_px = width_px
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC0407]))
    specs = []
    for i in range(n_slides):
        lo, hi = _DEFAULT_SIDE_RANGE_TILES
        w = width_px if width_px is not None else 256 * int(rng.integers(lo, hi + 1))
        h = height_px if height_px is not None else 256 * int(rng.integers(lo, hi + 1))
        slide_seed = int(np.random.SeedSequence([seed, i]).generate_state(1, np.uint64)[0] >> 1)
        specs.append(
            make_slide_spec(
                f"{slide_prefix}_{i:03d}",
                width_px=w,
                height_px=h,
                mpp=mpp,
                seed=slide_seed,
                burden_class=burden_cycle[i % len(burden_cycle)],
                tissue_fraction=tissue_fraction,
            )
        )
    return specs


def generate_cohort(
    out_dir: Path,
    n_slides: int,
    seed: int,
    *,
    width_px: int | None = None,
    height_px: int | None = None,
    mpp: float = 0.5,
    tile_size_px: int = 256,
    jpeg_quality: int = 85,
    colour_space: Literal["rgb", "ycbcr"] = "rgb",
    burden_cycle: Sequence[BurdenClass] = DEFAULT_BURDEN_CYCLE,
    slide_prefix: str = "synth",
    workers: int | None = None,
    tissue_fraction: float | None = None,
    level_step: int = 2,
) -> Path:
    """Write a synthetic cohort and return the path of its manifest.

    Layout: ``out_dir/slides/<id>.tif`` (pyramidal tiled JPEG TIFF), ``out_dir/annotations/
    <id>.geojson`` and ``<id>.xml`` (tumour polygons, level-0 px; empty for normal slides),
    ``out_dir/manifest.csv`` written last. The same arguments give byte-identical files.

    Parameters
    ----------
    out_dir
        Output folder (created).
    n_slides
        Number of slides.
    seed
        Cohort seed.
    width_px, height_px
        Level-0 size of every slide; one alone makes square slides; neither: a mix of sizes
        from 4,096 to 10,240 px per side (a demo of ~10 slides writes in about a minute on
        2 cores).
    mpp
        Level-0 microns per pixel.
    tile_size_px, jpeg_quality, colour_space, level_step
        TIFF tiling, JPEG settings and pyramid steps (see
        :func:`engine.synth.tiff_writer.write_slide`).
    burden_cycle
        Burden classes given to slides in turn.
    slide_prefix
        Slide IDs are ``<prefix>_<index:03d>``.
    workers
        Render threads per slide; default: up to 2, by CPU count.
    tissue_fraction
        Share of each slide's area covered by tissue (± 15 %); default: random, 20–60 %.
    """
    out_dir = Path(out_dir)
    specs = plan_cohort(
        n_slides,
        seed,
        width_px=width_px,
        height_px=height_px,
        mpp=mpp,
        burden_cycle=burden_cycle,
        slide_prefix=slide_prefix,
        tissue_fraction=tissue_fraction,
    )
    n_workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    splits = assign_splits(n_slides)
    rows = []
    started = time.perf_counter()
    for i, (spec, split) in enumerate(zip(specs, splits, strict=True)):
        slide_rel = Path("slides") / f"{spec.slide_id}.tif"
        geojson_rel = Path("annotations") / f"{spec.slide_id}.geojson"
        xml_rel = Path("annotations") / f"{spec.slide_id}.xml"
        write_slide(
            spec,
            out_dir / slide_rel,
            tile_size_px=tile_size_px,
            jpeg_quality=jpeg_quality,
            colour_space=colour_space,
            workers=n_workers,
            level_step=level_step,
        )
        write_qupath_geojson(spec.tumour, out_dir / geojson_rel)
        write_asap_xml(spec.tumour, out_dir / xml_rel)
        rows.append(
            {
                "slide_id": spec.slide_id,
                "path": slide_rel.as_posix(),
                "annotation": geojson_rel.as_posix(),
                "split": split,
                "label": "normal" if spec.tumour.is_empty else "tumor",
                "burden": spec.burden_class,
                "annotation_xml": xml_rel.as_posix(),
                "tumor_fraction": f"{spec.tumour_fraction:.6f}",
                "tissue_area_um2": f"{spec.tissue_area_um2:.1f}",
                "tumor_area_um2": f"{spec.tumour_area_um2:.1f}",
                "width_px": spec.width_px,
                "height_px": spec.height_px,
                "scanned_mpp": repr(spec.mpp),
            }
        )
        logger.info(
            "slide %d/%d %s (%s, %s) written",
            i + 1,
            n_slides,
            spec.slide_id,
            spec.burden_class,
            split,
        )
    manifest = out_dir / "manifest.csv"
    tmp = manifest.with_name(manifest.name + ".partial")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(manifest)
    logger.info(
        "cohort of %d slides in %s (%.1f s)", n_slides, out_dir, time.perf_counter() - started
    )
    return manifest
