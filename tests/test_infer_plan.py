"""Pure planning and TTA: geometry, tissue-tile selection, unit/chunk alignment, exact inverses."""

import numpy as np
import pytest
import torch

from engine.infer.plan import (
    plan_units,
    tile_geometry,
    tile_tissue_fraction,
    tissue_tiles,
    unit_input_window,
)
from engine.infer.tta import _TRANSFORMS, TTA_TRANSFORMS, with_tta


def _geometry(**overrides):
    kwargs = dict(
        width_px=10_000,
        height_px=6_000,
        mpp_x=0.5,
        mpp_y=0.5,
        model_mpp=2.0,
        tile_size_px=128,
        overlap_px=16,
        output_stride=4,
        unit_tiles=8,
    )
    kwargs.update(overrides)
    return tile_geometry(**kwargs)


def test_grid_covers_the_slide_at_the_model_resolution() -> None:
    g = _geometry()
    # 112 model px per tile step = 448 level-0 px; 10000 / 448 -> 23 columns, 6000 / 448 -> 14 rows.
    assert (g.n_cols, g.n_rows) == (23, 14)
    assert g.out_per_tile_px == 28 and g.out_chunk_px == 8 * 28
    assert g.level0_per_out_px_x == pytest.approx(16.0)  # 8 µm output pixels at 0.5 µm/px
    assert g.n_cols * g.step_px * g.level0_per_model_px_x >= 10_000


def test_patch_classifier_has_one_output_pixel_per_tile() -> None:
    g = _geometry(overlap_px=0, output_stride=128)
    assert g.out_per_tile_px == 1 and g.stride_px == 128


def test_tiles_are_selected_where_tissue_is_whatever_the_mask_resolution() -> None:
    g = _geometry()
    # Tissue mask at 8 µm/px: 625 x 375 px for the 5000 x 3000 µm slide; tissue in a box.
    tissue = np.zeros((375, 625), bool)
    tissue[100:200, 300:400] = True  # y 800-1600 µm, x 2400-3200 µm
    selected = tissue_tiles(
        g,
        tissue,
        tissue_scale_y_um=8,
        tissue_scale_x_um=8,
        tissue_translation_y_um=3.75,
        tissue_translation_x_um=3.75,
        mpp_x=0.5,
        mpp_y=0.5,
    )
    rows, cols = np.nonzero(selected)
    tile_um = g.step_px * 2.0  # 224 µm
    assert rows.min() == int(800 // tile_um) and rows.max() == int(1599 // tile_um)
    assert cols.min() == int(2400 // tile_um) and cols.max() == int(3199 // tile_um)


@pytest.mark.parametrize("seed", range(6))
def test_every_tissue_pixel_lies_under_a_scored_tile_and_only_those_are_scored(seed: int) -> None:
    """Brute force: a tile is scored exactly when some tissue pixel's footprint overlaps it."""
    rng = np.random.default_rng(seed)
    mpp = float(rng.uniform(0.24, 0.5))
    g = _geometry(
        width_px=4000, height_px=3000, mpp_x=mpp, mpp_y=mpp, model_mpp=float(rng.uniform(0.5, 2.0))
    )
    ds = float(rng.choice([8.0, 16.0, 32.0, 12.5]))  # tissue mask ds level-0 px per pixel
    scale, translation = mpp * ds, mpp * (ds - 1) / 2
    tissue = rng.random((int(np.ceil(3000 / ds)), int(np.ceil(4000 / ds)))) < 0.004
    selected = tissue_tiles(
        g,
        tissue,
        tissue_scale_y_um=scale,
        tissue_scale_x_um=scale,
        tissue_translation_y_um=translation,
        tissue_translation_x_um=translation,
        mpp_x=mpp,
        mpp_y=mpp,
    )
    tile_um = g.step_px * g.level0_per_model_px_x * mpp
    want = np.zeros_like(selected)
    for i, j in zip(*np.nonzero(tissue), strict=True):
        y0, x0 = (
            translation + (i - 0.5) * scale + mpp / 2,
            translation + (j - 0.5) * scale + mpp / 2,
        )
        for r in range(g.n_rows):
            for c in range(g.n_cols):
                overlap_y = min(y0 + scale, (r + 1) * tile_um) - max(y0, r * tile_um)
                overlap_x = min(x0 + scale, (c + 1) * tile_um) - max(x0, c * tile_um)
                if overlap_y > 1e-9 and overlap_x > 1e-9:
                    want[r, c] = True
    # Footprints past the last tile belong to it (the grid covers the slide; masks are ceil-sized).
    np.testing.assert_array_equal(selected[: want.shape[0], : want.shape[1]] | want, selected)
    extra = selected & ~want
    assert not extra[:-1, :-1].any(), "only tiles that tissue overlaps are scored"


@pytest.mark.parametrize("seed", range(4))
def test_tile_tissue_fraction_is_the_exact_area_under_tissue_and_positive_exactly_where_scored(
    seed: int,
) -> None:
    """Brute force on a fine grid: the share of each tile's kept area (clipped to the slide) on tissue."""
    rng = np.random.default_rng(100 + seed)
    mpp = float(rng.uniform(0.24, 0.5))
    width_px, height_px = 1500, 1100
    g = _geometry(
        width_px=width_px,
        height_px=height_px,
        mpp_x=mpp,
        mpp_y=mpp,
        model_mpp=float(rng.uniform(0.5, 1.0)),
    )
    ds = float(rng.choice([8.0, 16.0, 12.5]))
    scale, translation = mpp * ds, mpp * (ds - 1) / 2
    tissue = rng.random((int(np.ceil(height_px / ds)), int(np.ceil(width_px / ds)))) < 0.05
    kwargs = dict(
        tissue_scale_y_um=scale,
        tissue_scale_x_um=scale,
        tissue_translation_y_um=translation,
        tissue_translation_x_um=translation,
        mpp_x=mpp,
        mpp_y=mpp,
    )
    selected = tissue_tiles(g, tissue, **kwargs)
    rows, cols = np.meshgrid(np.arange(g.n_rows), np.arange(g.n_cols), indexing="ij")
    fraction = tile_tissue_fraction(
        g, rows.ravel(), cols.ravel(), tissue, width_px=width_px, height_px=height_px, **kwargs
    ).reshape(rows.shape)
    # Brute force: 4 x 4 samples per level-0 pixel, each on the tissue pixel whose footprint holds it.
    sub = 4
    centres_y = (np.arange(height_px * sub) + 0.5) / sub * mpp - mpp / 2
    centres_x = (np.arange(width_px * sub) + 0.5) / sub * mpp - mpp / 2
    iy = np.clip(
        np.floor((centres_y - translation) / scale + 0.5).astype(int), 0, tissue.shape[0] - 1
    )
    ix = np.clip(
        np.floor((centres_x - translation) / scale + 0.5).astype(int), 0, tissue.shape[1] - 1
    )
    fine = tissue[iy[:, None], ix[None, :]]
    tile_um = g.step_px * g.level0_per_model_px_x * mpp
    ty = np.floor((centres_y + mpp / 2) / tile_um).astype(int)
    tx = np.floor((centres_x + mpp / 2) / tile_um).astype(int)
    on = np.zeros(rows.shape)
    all_ = np.zeros(rows.shape)
    np.add.at(on, (ty[:, None].repeat(len(tx), 1), tx[None, :].repeat(len(ty), 0)), fine)
    np.add.at(all_, (ty[:, None].repeat(len(tx), 1), tx[None, :].repeat(len(ty), 0)), 1)
    np.testing.assert_allclose(fraction, on / all_, atol=0.02)
    inside = np.zeros_like(selected)
    inside[:-1, :-1] = True  # the last row/col also takes footprints past the slide's edge
    assert np.array_equal((fraction > 0)[inside], selected[inside])
    assert not (fraction > 0)[~selected].any(), "no tissue where nothing is scored"


def test_units_own_disjoint_output_chunks_and_cover_every_selected_tile() -> None:
    g = _geometry()
    rng = np.random.default_rng(0)
    selected = rng.random((g.n_rows, g.n_cols)) < 0.3
    units = plan_units("s", g, selected)
    covered = np.zeros_like(selected)
    chunk = g.out_chunk_px
    seen_chunks = set()
    for unit in units:
        mask = np.array(unit.tile_mask)
        covered[unit.row0 : unit.row0 + unit.rows, unit.col0 : unit.col0 + unit.cols] |= mask
        y0, x0 = unit.row0 * g.out_per_tile_px, unit.col0 * g.out_per_tile_px
        assert y0 % chunk == 0 and x0 % chunk == 0
        assert (y0 // chunk, x0 // chunk) not in seen_chunks
        seen_chunks.add((y0 // chunk, x0 // chunk))
    np.testing.assert_array_equal(covered, selected)


def test_unit_window_includes_the_context_margin() -> None:
    g = _geometry()
    unit = plan_units("s", g, np.ones((g.n_rows, g.n_cols), bool))[0]
    x0, y0, width, height = unit_input_window(g, unit)
    assert (x0, y0) == (-8, -8)
    assert width == unit.cols * g.step_px + 16


@pytest.mark.parametrize("name", list(_TRANSFORMS))
def test_every_tta_transform_has_an_exact_inverse(name: str) -> None:
    forward, inverse = _TRANSFORMS[name]
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    assert torch.equal(inverse(forward(x)), x)


@pytest.mark.parametrize("mode", list(TTA_TRANSFORMS))
def test_tta_of_an_equivariant_model_is_the_model(mode: str) -> None:
    pool = torch.nn.AvgPool2d(2)  # equivariant under flips and 90-degree rotations
    x = torch.rand(3, 3, 8, 8)
    torch.testing.assert_close(with_tta(pool, x, mode), pool(x))


def test_tta_averages_a_non_equivariant_model() -> None:
    def left_edge(t: torch.Tensor) -> torch.Tensor:
        return t[..., :1].expand_as(t).contiguous()

    x = torch.rand(1, 1, 4, 4)
    assert not torch.allclose(with_tta(left_edge, x, "flips"), left_edge(x))
