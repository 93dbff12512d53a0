"""Views' blending and colour mapping, computed in place, equal the plain formulas pixel for pixel."""

from __future__ import annotations

import matplotlib
import numpy as np

from engine.views.render import alpha_by_value, colourise, composite


def _composite_formula(base_rgb, overlay_rgba, opacity):  # noqa: ANN001, ANN202
    base = np.asarray(base_rgb, dtype=np.float32)
    over = np.asarray(overlay_rgba, dtype=np.float32)
    alpha = over[..., 3:4] / 255.0 * float(opacity)
    return np.clip(np.round(base * (1 - alpha) + over[..., :3] * alpha), 0, 255).astype(np.uint8)


def _colourise_formula(values, low, high, name, valid=None):  # noqa: ANN001, ANN202
    v = np.asarray(values, dtype=np.float64)
    show = np.isfinite(v) if valid is None else np.isfinite(v) & valid
    lut = np.round(matplotlib.colormaps[name].resampled(256)(np.linspace(0, 1, 256))[:, :3] * 255)
    with np.errstate(invalid="ignore"):
        scaled = np.clip((v - low) / (high - low), 0.0, 1.0)
    index = np.where(show, np.round(scaled * 255), 0).astype(np.intp)
    rgba = np.zeros(v.shape + (4,), np.uint8)
    rgba[..., :3] = lut.astype(np.uint8)[index]
    rgba[..., 3] = np.where(show, 255, 0)
    rgba[~show, :3] = 0
    return rgba


def test_composite_equals_the_formula() -> None:
    rng = np.random.default_rng(11)
    for _ in range(60):
        h, w = rng.integers(1, 40, 2)
        overlay = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
        overlay[..., 3] *= rng.random((h, w)) < rng.random()
        opacity = float(rng.choice([0.0, 0.35, 0.45, 1.0, rng.random()]))
        for base in (
            rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
            (rng.random((h, w, 3)) * 260 - 2).astype(np.float32),
        ):
            before = base.copy()
            np.testing.assert_array_equal(
                composite(base, overlay, opacity), _composite_formula(base, overlay, opacity)
            )
            np.testing.assert_array_equal(base, before)  # the caller's array is left alone


def test_colourise_equals_the_formula() -> None:
    rng = np.random.default_rng(12)
    for name in ("viridis", "inferno", "magma"):
        for _ in range(20):
            h, w = rng.integers(1, 40, 2)
            values = rng.normal(0.5, 0.6, (h, w))
            values[rng.random((h, w)) < 0.1] = np.nan
            values[rng.random((h, w)) < 0.05] = np.inf
            valid = rng.random((h, w)) < 0.8
            low, high = sorted(rng.normal(0.4, 0.4, 2))
            before = values.copy()
            for mask in (None, valid):
                np.testing.assert_array_equal(
                    colourise(values, low, high, name, valid=mask),
                    _colourise_formula(values, low, high, name, mask),
                )
            np.testing.assert_array_equal(values, before)


def test_alpha_by_value_equals_the_formula() -> None:
    rng = np.random.default_rng(13)
    for _ in range(40):
        h, w = rng.integers(1, 40, 2)
        rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
        values = rng.normal(0.5, 0.6, (h, w))
        values[rng.random((h, w)) < 0.1] = np.nan
        low, high = sorted(rng.normal(0.4, 0.4, 2))
        with np.errstate(invalid="ignore"):
            scaled = np.nan_to_num(np.clip((values - low) / (high - low), 0.0, 1.0), nan=0.0)
        expected = rgba.copy()
        expected[..., 3] = np.round(rgba[..., 3].astype(np.float64) * scaled).astype(np.uint8)
        np.testing.assert_array_equal(alpha_by_value(rgba, values, low, high), expected)
