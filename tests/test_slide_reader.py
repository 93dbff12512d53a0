"""The planar read path ingest uses gives exactly the bytes of read_region_rgb, on real slides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.errors import SlideUnreadable
from engine.slides import open_slide
from tests.conftest import shared_slide

READABLE = [
    "openslide-testdata/CMU-1-Small-Region.svs",
    "openslide-python/boxes.tiff",
    "openslide-python/small.svs",
    "openslide-python/boxes_0.dcm",
    "large_image/yb10kx5k.zstd.tiff",
    "large_image/test_orient6.tif",
    "highdicom/sm_image.dcm",
]


@pytest.mark.parametrize("name", READABLE)
def test_planar_read_equals_read_region_rgb_inside_and_across_the_edge(name: str) -> None:
    path = shared_slide(name)
    with open_slide(path, mpp_override=0.5) as slide:
        width, height = slide.info.width_px, slide.info.height_px
        regions = [
            (0, 0, min(width, 700), min(height, 500)),  # opaque: the one-pass plane split
            (width - 300, height - 200, 600, 400),  # past the edge: transparent pixels
        ]
        if slide.info.level_count > 1:
            regions.append((0, 0, 64, 48))
        for x, y, w, h in regions:
            for level in range(min(slide.info.level_count, 2)):
                expected = slide.read_region_rgb(x, y, level, w, h).transpose(2, 0, 1)
                planar = slide.read_region_planar(x, y, level, w, h)
                assert planar.shape == (3, h, w) and planar.dtype == np.uint8
                assert planar.flags.c_contiguous
                np.testing.assert_array_equal(planar, expected)


def test_planar_read_of_a_corrupt_tile_is_a_slide_error() -> None:
    path = shared_slide("openslide-python/unreadable.svs")
    with (
        open_slide(Path(path), mpp_override=0.5) as slide,
        pytest.raises(SlideUnreadable, match="tile data is corrupt"),
    ):
        slide.read_region_planar(0, 0, 0, 16, 16)
