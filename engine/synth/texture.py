"""H&E-like texture as a pure function of absolute coordinates.

Every pattern (stain intensity, fibres, fat holes, nuclei, grain) is seeded noise evaluated at
level-0 pixel centres, so any tile at any downsample is reproducible and agrees with its
neighbours. Colour follows Beer–Lambert: per pixel a haematoxylin and an eosin concentration,
mapped to RGB through a per-slide lookup table. Features smaller than a pixel of the requested
level fade to their mean, so lower pyramid levels look like averaged higher ones.

Speed matters (whole slides are rendered on CPU): noise is interpolated separably from small
lattices, nuclei are evaluated per cell row / column before expansion, and full-size temporaries
are kept few, since each costs page faults as well as arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.synth.spec import StainParams

GLASS, TISSUE, TUMOUR = 0, 1, 2
"""Class values of label rasters and patch masks."""

_H_MAX = 2.5  # concentration range covered by the colour lookup table (optical density)
_E_MAX = 2.0
_LEVELS = 256
_H_STEP = np.float32((_LEVELS - 1) / _H_MAX)
_E_STEP = np.float32((_LEVELS - 1) / _E_MAX)
_GRAIN_SIZE = 512  # side of the tiling per-pixel grain table
GRAIN_PERIOD_PX = _GRAIN_SIZE
"""Period of the per-pixel grain, in output pixels: bare glass repeats with it."""

_U64 = np.uint64
_P1 = _U64(0x9E3779B97F4A7C15)
_P2 = _U64(0xC2B2AE3D27D4EB4F)
_M1 = _U64(0xBF58476D1CE4E5B9)
_M2 = _U64(0x94D049BB133111EB)
_F32 = np.float32


def _mix(h: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """splitmix64 finaliser (wrapping uint64 arithmetic)."""
    h = h ^ (h >> _U64(30))
    h = h * _M1
    h = h ^ (h >> _U64(27))
    h = h * _M2
    return h ^ (h >> _U64(31))


def salt_for(seed: int, stream: int) -> int:
    """A 64-bit salt for one noise stream of one seed."""
    return int(_mix(np.array([(seed * 1_000_003 + stream) & 0xFFFFFFFFFFFFFFFF], dtype=_U64))[0])


def hash2(ix: NDArray[np.int64], iy: NDArray[np.int64], salt: int) -> NDArray[np.uint64]:
    """Hash integer lattice coordinates (broadcast) to uniform uint64."""
    h = ix.astype(_U64) * _P1 ^ iy.astype(_U64) * _P2 ^ _U64(salt)
    return _mix(h)


def unit_field(h: NDArray[np.uint64], part: int) -> NDArray[np.float32]:
    """The ``part``-th 16-bit slice (0–3) of a hash as a float in [0, 1)."""
    bits = (h >> _U64(16 * part)) & _U64(0xFFFF)
    return bits.astype(np.float32) * _F32(1.0 / 65536.0)


def _smooth(f: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
    f32 = f.astype(np.float32)
    return f32 * f32 * (_F32(3.0) - _F32(2.0) * f32)


def value_noise(
    xc: NDArray[np.floating[Any]],
    yc: NDArray[np.floating[Any]],
    spacing_x_px: float,
    spacing_y_px: float,
    salt: int,
    downsample: float,
) -> NDArray[np.float32]:
    """Smooth noise in [0, 1) on a lattice of the given spacing (level-0 px), at pixel centres.

    ``xc`` (w,) and ``yc`` (h,) are level-0 coordinates of the pixel centres. Lattice values are
    hashed from absolute lattice indices; interpolation is separable (cheap per pixel). Where the
    lattice is finer than two output pixels, the noise fades to its mean 0.5.
    """
    fade = min(1.0, max(0.0, min(spacing_x_px, spacing_y_px) / downsample - 1.0))
    if fade == 0.0:
        return np.full((yc.size, xc.size), 0.5, dtype=np.float32)
    gx = xc / spacing_x_px
    gy = yc / spacing_y_px
    ix = np.floor(gx).astype(np.int64)
    iy = np.floor(gy).astype(np.int64)
    fx = _smooth(gx - ix)
    fy = _smooth(gy - iy)[:, None]
    ix0, iy0 = int(ix.min()), int(iy.min())
    lat_x = np.arange(ix0, int(ix.max()) + 2, dtype=np.int64)
    lat_y = np.arange(iy0, int(iy.max()) + 2, dtype=np.int64)
    grid = unit_field(hash2(lat_x[None, :], lat_y[:, None], salt), 0)
    if fade < 1.0:
        grid = _F32(0.5) + (grid - _F32(0.5)) * _F32(fade)
    jx = ix - ix0
    left = grid[:, jx]
    rows = left + (grid[:, jx + 1] - left) * fx  # (lattice rows, w)
    jy = iy - iy0
    out = rows[jy + 1]
    top = rows[jy]
    out -= top
    out *= fy
    out += top
    return out


@dataclass(frozen=True)
class NucleusGrid:
    """One jittered grid of elliptical nuclei (at most one per cell), sizes in µm."""

    cell_um: float
    presence: float
    semi_major_um: float
    semi_minor_um: float
    darkness: float
    stream: int
    offset_cells: float = 0.0

    def area_share(self) -> float:
        """Expected share of area covered by nuclei (sizes vary ±20 %: E[s²] = 1 + 0.04 / 3)."""
        area = np.pi * self.semi_major_um * self.semi_minor_um * (1.0 + 0.04 / 3.0)
        return float(self.presence * area / self.cell_um**2)

    def mean_coverage(self) -> float:
        """Expected darkness-weighted coverage (used where nuclei are below pixel size)."""
        return self.area_share() * self.darkness


STROMA_NUCLEI = NucleusGrid(17.0, 0.55, 4.6, 1.7, darkness=0.95, stream=101)
TUMOUR_NUCLEI = (
    NucleusGrid(13.0, 0.92, 5.0, 3.9, darkness=1.35, stream=111),
    NucleusGrid(13.0, 0.92, 5.0, 3.9, darkness=1.35, stream=112, offset_cells=0.5),
)


def nuclei_detail(grid: NucleusGrid, mpp: float, downsample: float) -> float:
    """How much of the nuclear pattern a level shows: 1 above 4 pixels per cell, 0 below 2."""
    return min(1.0, max(0.0, grid.cell_um / mpp / downsample / 2.0 - 1.0))


def tumour_nuclei(
    xc: NDArray[np.floating[Any]],
    yc: NDArray[np.floating[Any]],
    mpp: float,
    downsample: float,
    seed: int,
) -> NDArray[np.float32] | np.float32:
    """Nuclei of tumour: two offset grids, so nuclei are dense without a visible lattice."""
    first, second = TUMOUR_NUCLEI
    a, b = first.area_share(), second.area_share()
    # Below pixel size the two independent grids cover their union.
    mean = _F32((a + b - a * b) * first.darkness)
    fade = nuclei_detail(first, mpp, downsample)
    if fade == 0.0:
        return mean
    out = np.maximum(
        nuclei(xc, yc, first, mpp, downsample, seed, fade_to_mean=False),
        nuclei(xc, yc, second, mpp, downsample, seed, fade_to_mean=False),
    )
    if fade < 1.0:
        out -= mean
        out *= _F32(fade)
        out += mean
    return out


def nuclei(
    xc: NDArray[np.floating[Any]],
    yc: NDArray[np.floating[Any]],
    grid: NucleusGrid,
    mpp: float,
    downsample: float,
    seed: int,
    *,
    fade_to_mean: bool = True,
) -> NDArray[np.float32] | np.float32:
    """Haematoxylin from nuclei (coverage times per-nucleus darkness) at pixel centres.

    Where cells shrink below a few output pixels the pattern fades to its mean (a scalar once
    cells are under two pixels), unless ``fade_to_mean`` is False and the caller blends.
    """
    cell = grid.cell_um / mpp
    fade = nuclei_detail(grid, mpp, downsample) if fade_to_mean else 1.0
    mean = _F32(grid.mean_coverage())
    if fade == 0.0:
        return mean
    off = grid.offset_cells * cell
    gx = (xc + off) / cell
    gy = (yc + off) / cell
    ix = np.floor(gx).astype(np.int64)
    iy = np.floor(gy).astype(np.int64)
    ox = ((gx - ix) * cell).astype(np.float32)  # offset inside the cell, level-0 px
    oy = ((gy - iy) * cell).astype(np.float32)
    ix0, iy0 = int(ix.min()), int(iy.min())
    lat_x = np.arange(ix0, int(ix.max()) + 1, dtype=np.int64)
    lat_y = np.arange(iy0, int(iy.max()) + 1, dtype=np.int64)
    h = hash2(lat_x[None, :], lat_y[:, None], salt_for(seed, grid.stream))
    present = unit_field(h, 0) < grid.presence
    size = _F32(0.8) + _F32(0.4) * unit_field(h, 1)
    a = _F32(grid.semi_major_um / mpp) * size
    b = _F32(grid.semi_minor_um / mpp) * size
    room = _F32(cell) - 2 * a  # centres keep the whole nucleus inside its cell
    centre_x = a + room * unit_field(h, 2)
    centre_y = a + room * unit_field(h, 3)
    h2 = _mix(h)
    angle = _F32(np.pi) * unit_field(h2, 0)
    dark = (_F32(0.75) + _F32(0.5) * unit_field(h2, 1)) * _F32(grid.darkness)
    c, s = np.cos(angle), np.sin(angle)
    inv_a2, inv_b2 = 1.0 / (a * a), 1.0 / (b * b)
    # Ellipse as a quadratic form q = A dx² + B dx dy + C dy² (q < 1 inside); absent cells get
    # a huge A so they never cover anything.
    qa = np.where(present, c * c * inv_a2 + s * s * inv_b2, _F32(1e9)).astype(np.float32)
    qb = (2.0 * c * s * (inv_a2 - inv_b2)).astype(np.float32)
    qc = (s * s * inv_a2 + c * c * inv_b2).astype(np.float32)
    jx = ix - ix0
    jy = iy - iy0
    # dx depends only on (cell row, column) and dy on (row, cell column): evaluate the terms at
    # that small size, then expand each once to full size.
    dx = ox[None, :] - centre_x[:, jx]  # (cell rows, w)
    dy = oy[:, None] - centre_y[jy, :]  # (h, cell columns)
    q = (qa[:, jx] * dx * dx)[jy]
    cross = (qb[:, jx] * dx)[jy]
    cross *= dy[:, jx]
    q += cross
    q += (qc[jy, :] * dy * dy)[:, jx]
    # Anti-aliased edge: signed distance ≈ (1 - q) b / 2, over a pixel footprint of `downsample`.
    k = _F32(grid.semi_minor_um / mpp / (2.0 * downsample))
    q *= -k
    q += k + _F32(0.5)
    np.clip(q, 0.0, 1.0, out=q)
    q *= dark[:, jx][jy]
    if fade < 1.0:
        q -= mean
        q *= _F32(fade)
        q += mean
    return q


@lru_cache(maxsize=64)
def colour_lut(stain: StainParams) -> NDArray[np.uint8]:
    """RGB for every quantised (haematoxylin, eosin) concentration pair, shape (256*256, 3)."""
    ch = np.arange(_LEVELS) / _H_STEP
    ce = np.arange(_LEVELS) / _E_STEP
    h_od = np.asarray(stain.haematoxylin_od) * stain.haematoxylin_scale
    e_od = np.asarray(stain.eosin_od) * stain.eosin_scale
    od = ch[:, None, None] * h_od + ce[None, :, None] * e_od + 0.015
    rgb = np.asarray(stain.illuminant) * np.exp(-od)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(-1, 3)


@lru_cache(maxsize=16)
def _grain_tables(seed: int) -> NDArray[np.float32]:
    """Per-pixel grain in [0, 1), tiling with period ``_GRAIN_SIZE``; channels H, E."""
    rng = np.random.default_rng(np.random.SeedSequence([seed & (2**63 - 1), 0x6A41]))
    return rng.random(size=(2, _GRAIN_SIZE, _GRAIN_SIZE), dtype=np.float32)


@lru_cache(maxsize=16)
def _glass_index(seed: int) -> NDArray[np.int32]:
    """Colour-table index of bare glass (faint grain), tiling like the grain."""
    g = _grain_tables(seed)
    qh = ((_F32(0.003) + _F32(0.010) * g[0]) * _H_STEP + _F32(0.5)).astype(np.int32)
    qe = ((_F32(0.006) + _F32(0.012) * g[1]) * _E_STEP + _F32(0.5)).astype(np.int32)
    return qh * _LEVELS + qe


def _tiled(table: NDArray[np.generic], row0: int, col0: int, height: int, width: int) -> NDArray:
    """Window of a periodic table (last two axes); a view when it does not wrap."""
    r = row0 % _GRAIN_SIZE
    c = col0 % _GRAIN_SIZE
    if r + height <= _GRAIN_SIZE and c + width <= _GRAIN_SIZE:
        return table[..., r : r + height, c : c + width]
    rows = np.arange(r, r + height)
    cols = np.arange(c, c + width)
    return np.take(np.take(table, rows, axis=-2, mode="wrap"), cols, axis=-1, mode="wrap")


# Per-class texture constants, indexed by label (glass, tissue, tumour).
_E_BASE = np.array([0.0, 0.62, 0.42], dtype=np.float32)
_H_BASE = np.array([0.0, 0.07, 0.30], dtype=np.float32)
_HOLE_THRESHOLD = np.array([2.0, 0.655, 0.70], dtype=np.float32)
_HOLE_MEAN = 0.04  # share of tissue that holes cover, used where holes are below pixel size


def paint(
    labels: NDArray[np.uint8],
    *,
    x0_px: float,
    y0_px: float,
    downsample: float,
    mpp: float,
    stain: StainParams,
    seed: int,
) -> NDArray[np.uint8]:
    """RGB texture for a label raster (0 glass, 1 tissue, 2 tumour).

    Parameters
    ----------
    labels
        Class per output pixel, shape (h, w).
    x0_px, y0_px
        Level-0 position of the region's top-left corner.
    downsample
        Level-0 pixels per output pixel.
    mpp
        Level-0 microns per pixel (texture sizes are physical).
    stain
        Stain and scanner appearance.
    seed
        Texture seed.

    Returns
    -------
    uint8 array (h, w, 3).
    """
    height, width = labels.shape
    d = float(downsample)
    lut = colour_lut(stain)
    col0 = int(np.floor(x0_px / d + 0.5))  # level-grid index of the first pixel (for grain)
    row0 = int(np.floor(y0_px / d + 0.5))
    lo, hi = int(labels.min()), int(labels.max())
    if hi == GLASS:
        return np.take(lut, _tiled(_glass_index(seed), row0, col0, height, width), axis=0)

    xc = x0_px + (np.arange(width) + 0.5) * d
    yc = y0_px + (np.arange(height) + 0.5) * d
    um = 1.0 / mpp  # level-0 px per µm

    def noise(sx_um: float, sy_um: float, stream: int) -> NDArray[np.float32]:
        return value_noise(xc, yc, sx_um * um, sy_um * um, salt_for(seed, stream), d)

    def per_class(table: NDArray[np.float32]) -> NDArray[np.float32] | np.float32:
        return table[lo] if lo == hi else np.take(table, labels)

    coarse = noise(260.0, 260.0, 1)
    fibre = noise(34.0, 5.0, 2)
    across = noise(5.0, 34.0, 3)
    # Fibre direction changes from region to region, following the coarse field.
    across -= fibre
    across *= np.clip((coarse - _F32(0.35)) * _F32(3.3), 0.0, 1.0)
    fibre += across

    # Two incommensurate lattices hide each other's grid; the coarse field makes fatty regions.
    holes = noise(53.0, 41.0, 5)
    holes += noise(29.0, 37.0, 6)
    holes *= _F32(0.33)
    holes += _F32(0.34) * coarse
    holes -= per_class(_HOLE_THRESHOLD)
    holes *= _F32(-0.95 * 25.0)
    # keep = 1 - 0.95 * clip(25 (n - t), 0, 1): the share of stain left by fat / lumen holes.
    np.clip(holes, _F32(-0.95), _F32(0.0), out=holes)
    keep = holes
    keep += _F32(1.0)
    hole_fade = min(1.0, max(0.0, 29.0 * um / d - 1.0))
    if hole_fade < 1.0:
        keep -= _F32(1.0)
        keep *= _F32(hole_fade)
        keep += _F32(1.0 - 0.95 * _HOLE_MEAN * (1.0 - hole_fade))

    if hi < TUMOUR:
        nuc = nuclei(xc, yc, STROMA_NUCLEI, mpp, d, seed)
    else:
        tumour_nuc = tumour_nuclei(xc, yc, mpp, d, seed)
        if lo == TUMOUR:
            nuc = tumour_nuc
        else:
            stroma_nuc = nuclei(xc, yc, STROMA_NUCLEI, mpp, d, seed)
            nuc = np.where(labels == TUMOUR, tumour_nuc, stroma_nuc)

    grain = _tiled(_grain_tables(seed), row0, col0, height, width)
    strength = coarse
    strength *= _F32(0.4)
    strength += _F32(0.8)

    # Eosin: stroma fibres, scaled by the regional strength, emptied in holes, plus grain.
    conc_e = fibre
    conc_e *= _F32(0.7)
    conc_e += _F32(0.65)
    conc_e *= strength
    conc_e *= per_class(_E_BASE) * _E_STEP
    conc_e *= keep
    conc_e += grain[1] * _F32(0.03 * _E_STEP)
    conc_e += _F32(0.012 * _E_STEP + 0.5)

    # Haematoxylin: cytoplasm tint plus nuclei with chromatin grain, emptied in holes.
    conc_h = grain[0] * _F32(0.3 * _H_STEP)
    conc_h += _F32(0.85 * _H_STEP)
    conc_h *= nuc
    strength *= per_class(_H_BASE) * _H_STEP
    conc_h += strength
    conc_h *= keep
    conc_h += _F32(0.006 * _H_STEP + 0.5)

    top = _F32(_LEVELS - 1)
    index = np.minimum(conc_h, top, out=conc_h).astype(np.int32)
    index *= _LEVELS
    index += np.minimum(conc_e, top, out=conc_e).astype(np.int32)
    if lo == GLASS:
        index = np.where(
            labels == GLASS, _tiled(_glass_index(seed), row0, col0, height, width), index
        )
    return np.take(lut, index, axis=0)
