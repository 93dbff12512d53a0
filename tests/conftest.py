"""Shared fixtures: one local Ray for the session, real slide files, small synthetic slides."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_SLIDES = SHARED / "slides"
SHARED_ANNOTATIONS = SHARED / "annotations"
CMU_SMALL = SHARED_SLIDES / "openslide-testdata" / "CMU-1-Small-Region.svs"

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def shared_slide(relative: str) -> Path:
    """A slide of ``../shared/slides``: the suite's real inputs, so a missing one fails the test
    (never a silent skip)."""
    path = SHARED_SLIDES / relative
    if not path.is_file():
        pytest.fail(f"{path} is missing: the tests read the real slides in ../shared/slides")
    return path


@pytest.fixture(scope="session")
def ray_session():
    """One real local Ray for the whole session: 2 CPUs and 2 logical GPUs (for pinning tests)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False
        )
    yield ray
    ray.shutdown()


def write_plain_tiff_slide(path: Path, rgb: np.ndarray, mpp: float, *, tile_px: int = 256) -> Path:
    """A real single-level tiled TIFF that OpenSlide opens (generic TIFF driver), with mpp."""
    pixels_per_cm = 1e4 / mpp
    tifffile.imwrite(
        path,
        rgb,
        tile=(tile_px, tile_px),
        photometric="rgb",
        compression="zlib",
        resolution=(pixels_per_cm, pixels_per_cm),
        resolutionunit="CENTIMETER",
    )
    return path


@pytest.fixture(scope="session")
def synth_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic cohort (4 slides, all burden classes) written by the project's generator."""
    from engine.synth import generate_cohort

    out = tmp_path_factory.mktemp("synth")
    return generate_cohort(out, 4, seed=7, width_px=3072, height_px=2048)
