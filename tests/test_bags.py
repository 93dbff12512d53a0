"""Bag selection and per-tile scores from a map (pure compute, checked by hand and brute force)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.mil.bags import select_bag, tile_scores_from_map


def test_tile_score_is_the_map_maximum_over_the_tile_box() -> None:
    scores = np.zeros((8, 8), np.float32)
    scores[1, 1] = 0.9  # map px (1, 1) covers level-0 [4, 8) x [4, 8) at 4 level-0 px per map px
    scores[6, 6] = np.nan
    coords = np.array([[0, 0, 8, 8], [8, 8, 8, 8], [24, 24, 8, 8]])
    out = tile_scores_from_map(scores, coords, level0_px_per_map_px_x=4, level0_px_per_map_px_y=4)
    assert out[0] == np.float32(0.9) and out[1] == 0
    assert out[2] == 0  # NaN pixels are ignored while others are finite


def test_all_tissue_and_fallback_to_the_most_tissue_tile() -> None:
    fraction = np.array([0.1, 0.5, 0.9, 0.2])
    assert select_bag(fraction, min_tissue_fraction=0.25).tolist() == [1, 2]
    assert select_bag(fraction, min_tissue_fraction=0.95).tolist() == [2]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from([0.1, 0.3, 0.5, float("nan")]), min_size=1, max_size=30),
    st.integers(1, 10),
)
def test_top_k_matches_a_brute_force_ranking(values: list[float], k: int) -> None:
    scores = np.array(values)
    fraction = np.linspace(0.3, 1.0, len(values))
    got = select_bag(fraction, min_tissue_fraction=0.25, k=k, tile_scores=scores)
    key = [(-(v if np.isfinite(v) else -np.inf), i) for i, v in enumerate(values)]
    expected = sorted(i for _, i in sorted(key)[:k])
    assert got.tolist() == expected
