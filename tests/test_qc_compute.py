"""Slide and annotation QC measures on known images, and cohort flags (pure compute)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from shapely.geometry import Polygon, box

from engine.qc.annotation_quality import annotation_quality
from engine.qc.cohort_flags import ANNOTATION_RULES, SLIDE_RULES, flag_cohort, robust_z
from engine.qc.slide_quality import macenko_stain_vectors, slide_quality
from engine.synth.patches import render_patch

PIXEL_UM = 1.0


def he_patch(seed: int, size_px: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """An H&E-like patch from the project's slide texture and its tissue mask (class > 0)."""
    rgb, classes = render_patch(np.random.default_rng(seed), size_px=size_px, mpp=PIXEL_UM)
    return rgb, classes > 0


def test_clean_patch_has_no_pen_and_little_debris() -> None:
    rgb, tissue = he_patch(1)
    quality = slide_quality(rgb, tissue, PIXEL_UM)
    assert quality.tissue_fraction == pytest.approx(tissue.mean())
    assert quality.tissue_area_mm2 == pytest.approx(tissue.sum() * 1e-6)
    assert quality.pen_fraction < 0.002
    assert quality.dark_fraction < 0.01
    assert quality.tissue_tiles > 0
    assert quality.hematoxylin_od is not None and quality.hematoxylin_od > 0


@pytest.mark.parametrize("ink", [(20, 60, 190), (30, 140, 60), (20, 150, 160)])  # blue, green, teal
def test_pen_ink_is_measured(ink: tuple[int, int, int]) -> None:
    rgb, tissue = he_patch(2)
    stroke = np.zeros(tissue.shape, bool)
    stroke[100:140, 50:450] = True  # 40 x 400 px of marker
    inked = rgb.copy()
    inked[stroke] = (0.85 * np.array(ink) + 0.15 * rgb[stroke]).astype(np.uint8)
    before = slide_quality(rgb, tissue, PIXEL_UM).pen_fraction
    after = slide_quality(inked, tissue, PIXEL_UM).pen_fraction
    assert after - before == pytest.approx(stroke.mean(), rel=0.05)


def test_blur_lowers_sharpness_and_raises_blurred_fraction() -> None:
    rgb, tissue = he_patch(3)
    blurred = np.stack(
        [ndimage.gaussian_filter(rgb[..., c].astype(float), 4) for c in range(3)], axis=-1
    )
    blurred = np.clip(np.round(blurred), 0, 255).astype(np.uint8)
    sharp = slide_quality(rgb, tissue, PIXEL_UM)
    soft = slide_quality(blurred, tissue, PIXEL_UM)
    assert soft.laplacian_var_median < sharp.laplacian_var_median / 10
    assert sharp.blurred_tile_fraction < 0.25 < soft.blurred_tile_fraction


def test_macenko_recovers_known_stain_vectors() -> None:
    h_true = np.array([0.65, 0.70, 0.29])
    e_true = np.array([0.07, 0.99, 0.11])
    h_true, e_true = h_true / np.linalg.norm(h_true), e_true / np.linalg.norm(e_true)
    rng = np.random.default_rng(0)
    concentrations = rng.gamma(2.0, 0.4, size=(20_000, 2))
    od = concentrations @ np.stack([h_true, e_true])
    rgb = np.clip(np.round(256 * np.exp(-od) - 1), 0, 255).astype(np.uint8)
    vectors = macenko_stain_vectors(rgb)
    assert vectors is not None
    h, e = vectors
    assert float(h @ h_true) > 0.995
    assert float(e @ e_true) > 0.995


def test_robust_z_ignores_one_outlier_and_flags_it() -> None:
    values = [0.010, 0.011, 0.009, 0.010, 0.012, 0.2]
    z = robust_z(values)
    assert abs(z[0]) < 1 and z[-1] > 50
    rows = [{"blurred_tile_fraction": 0.02, "laplacian_var_median": v} for v in values]
    rows[2]["blurred_tile_fraction"] = 0.6  # beyond the absolute limit
    rows[4]["laplacian_var_median"] = 0.0001  # far below the others
    _, flags, reasons = flag_cohort(rows, SLIDE_RULES)
    assert flags[2] == ["blur"] and "above the limit 0.25" in reasons[2][0]
    assert flags[4] == ["blur"] and "far below the cohort median" in reasons[4][0]
    assert flags[0] == [] and flags[1] == []
    assert flags[5] == []  # unusually sharp is not a problem


def test_annotation_quality_counts_and_suspects() -> None:
    tissue = np.zeros((100, 100), bool)  # 10 µm/px tissue mask over a 1000 x 1000 µm slide
    tissue[:, :50] = True  # left half is tissue: 0.5 mm²
    mpp = 0.5  # level-0 px; the slide is 2000 x 2000 px
    polygons = [
        box(100, 100, 300, 300),  # on tissue, 100 x 100 µm = 10,000 µm²
        box(200, 1000, 400, 1200),  # on tissue, 10,000 µm²
        box(1500, 200, 1700, 400),  # on glass (right half)
        box(1900, 1900, 2100, 2100),  # crosses the slide's edge, off tissue
        Polygon([(10, 10), (20, 20), (30, 30)]),  # zero area: degenerate
    ]
    quality = annotation_quality(
        polygons,
        slide_width_px=2000,
        slide_height_px=2000,
        mpp=mpp,
        tissue=tissue,
        tissue_pixel_um=10.0,
    )
    assert quality.objects == 5 and quality.degenerate_objects == 1
    assert quality.objects_outside_slide == 1
    assert quality.objects_off_tissue == 2
    assert quality.density_per_mm2_tissue == pytest.approx(4 / 0.5)
    assert quality.area_um2_median == pytest.approx(10_000)
    # Union inside the slide: 3 full boxes + a quarter of the edge box = 32,500 µm² of 0.5 mm².
    assert quality.positive_fraction_of_tissue == pytest.approx(32_500 / 500_000)
    _, flags, _ = flag_cohort([quality.__dict__], ANNOTATION_RULES)
    assert set(flags[0]) == {
        "degenerate_annotation",
        "annotation_outside_slide",
        "annotation_off_tissue",
    }


def test_dense_slide_is_an_outlier_in_its_cohort() -> None:
    densities = [5.0, 6.0, 5.5, 4.8, 6.2, 5.1, 180.0]  # one slide 36x denser
    rows = [{"density_per_mm2_tissue": d} for d in densities]
    _, flags, reasons = flag_cohort(rows, ANNOTATION_RULES)
    assert [i for i, f in enumerate(flags) if f] == [6]
    assert "objects per mm² of tissue 180 is far above the cohort median" in reasons[6][0]


def test_self_intersecting_outline_is_flagged_but_measured() -> None:
    tissue = np.ones((100, 100), bool)
    bowtie = Polygon([(0, 0), (200, 200), (200, 0), (0, 200)])  # crosses itself at (100, 100)
    quality = annotation_quality(
        [bowtie],
        slide_width_px=1000,
        slide_height_px=1000,
        mpp=1.0,
        tissue=tissue,
        tissue_pixel_um=10.0,
    )
    assert quality.degenerate_objects == 1
    assert quality.area_um2_median == pytest.approx(20_000)  # two triangles of 10,000 µm²
