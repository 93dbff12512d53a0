import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.slides import open_slide
from engine.tissue import TissueParams, detect_tissue
from tests.conftest import CMU_SMALL


def test_real_he_slide_has_tissue_and_glass() -> None:
    with open_slide(CMU_SMALL) as slide:
        rgb = slide.read_region_rgb(0, 0, 0, slide.info.width_px, slide.info.height_px)
        mpp = slide.info.mpp
    small = rgb[::8, ::8]
    mask = detect_tissue(small, mpp * 8)
    # CMU-1-Small-Region: a strip of skin tissue on glass, roughly a third to a half of the area.
    assert 0.2 < mask.mean() < 0.7
    # The glass corners are white and must not be called tissue.
    assert not mask[:10, :10].any()


def test_blank_glass_has_no_tissue() -> None:
    rng = np.random.default_rng(0)
    glass = np.clip(rng.normal(238, 3, size=(300, 300, 3)), 0, 255).astype(np.uint8)
    assert not detect_tissue(glass, 8.0).any()


def test_small_specks_are_removed_in_micrometres() -> None:
    image = np.full((200, 200, 3), 240, np.uint8)
    image[50:150, 50:150] = (200, 80, 160)  # 100x100 px of tissue
    image[10:13, 10:13] = (200, 80, 160)  # a 3x3 px speck
    params = TissueParams(min_tissue_um2=20 * 20 * 16, closing_radius_um=0)
    mask = detect_tissue(image, 4.0, params)  # speck: 12 µm wide → 144 µm² < 6400 µm²
    assert mask[100, 100]
    assert not mask[11, 11]


@settings(max_examples=300, deadline=None)
@given(
    shape=st.tuples(st.integers(3, 80), st.integers(3, 80)),
    radius=st.integers(1, 14),
    density=st.floats(0.02, 0.7),
    seed=st.integers(0, 2**32 - 1),
)
def test_closing_disk_equals_skimage_closing(shape, radius, density, seed) -> None:
    """The distance-transform closing is the grey closing by skimage's disk, borders included."""
    from skimage import morphology

    from engine.tissue import closing_disk

    mask = np.random.default_rng(seed).random(shape) < density
    expected = morphology.closing(mask, morphology.disk(radius))
    np.testing.assert_array_equal(closing_disk(mask, radius), expected)
