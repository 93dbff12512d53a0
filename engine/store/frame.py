"""The one coordinate frame: pixel grids placed in the slide's physical space, read one way.

Every stored 2-D grid (a slide's image levels, its labels, a score map and its levels) is a
:class:`Frame`: pixel ``(r, c)`` has its centre at ``(translation_y + r * scale_y,
translation_x + c * scale_x)`` µm, the NGFF 0.5 ``scale`` / ``translation`` of its dataset.
Level-0 pixel ``k`` of the slide has its centre at ``k * mpp`` µm (its translation is 0), so a
level ``ds`` times coarser has ``scale = ds * mpp`` and ``translation = (ds - 1) / 2 * mpp``:
its pixel covers level-0 ``[k * ds, (k + 1) * ds)`` and is drawn there by viewers (QuPath).

Grids are mapped onto each other through this frame only (never by shapes or powers of two):
:func:`nearest_indices` is the one nearest-pixel-centre lookup, :func:`resample_nearest` the one
label resampler, :func:`multiscale_frames` the one NGFF multiscales reader.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray


class FrameError(ValueError):
    """NGFF metadata that does not describe a usable multiscale grid."""


@dataclass(frozen=True, slots=True)
class Frame:
    """A 2-D pixel grid: pixel size and pixel-0 centre in µm (y, x), shape, and its array path."""

    scale_y_um: float
    scale_x_um: float
    translation_y_um: float = 0.0
    translation_x_um: float = 0.0
    height_px: int = 0
    width_px: int = 0
    path: str = ""

    def __post_init__(self) -> None:
        if not (self.scale_y_um > 0 and self.scale_x_um > 0):
            raise FrameError(
                f"pixel size must be positive, got {self.scale_y_um} x {self.scale_x_um} µm"
            )
        if self.height_px < 0 or self.width_px < 0:
            raise FrameError(f"grid shape must be >= 0, got {self.height_px} x {self.width_px}")

    @classmethod
    def of_level(
        cls,
        path: str,
        mpp_y: float,
        mpp_x: float,
        downsample_y: float,
        downsample_x: float,
        height_px: int = 0,
        width_px: int = 0,
    ) -> Frame:
        """A level ``downsample`` times coarser than a level 0 of pixel size ``mpp`` (µm)."""
        return cls(
            scale_y_um=mpp_y * downsample_y,
            scale_x_um=mpp_x * downsample_x,
            translation_y_um=mpp_y * (downsample_y - 1.0) / 2.0,
            translation_x_um=mpp_x * (downsample_x - 1.0) / 2.0,
            height_px=height_px,
            width_px=width_px,
            path=path,
        )

    def with_shape(self, height_px: int, width_px: int) -> Frame:
        return replace(self, height_px=int(height_px), width_px=int(width_px))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height_px, self.width_px)

    @property
    def pixel_um(self) -> float:
        """Pixel side in µm: the geometric mean of x and y (areas are measured with it)."""
        return math.sqrt(self.scale_x_um * self.scale_y_um)

    def centres_y_um(self) -> NDArray[np.float64]:
        return self.translation_y_um + np.arange(self.height_px, dtype=np.float64) * self.scale_y_um

    def centres_x_um(self) -> NDArray[np.float64]:
        return self.translation_x_um + np.arange(self.width_px, dtype=np.float64) * self.scale_x_um

    def level0_placement(
        self,
        mpp_x: float,
        mpp_y: float,
        *,
        level0_translation_x_um: float = 0.0,
        level0_translation_y_um: float = 0.0,
    ) -> dict[str, float]:
        """This grid in level-0 pixels (pixel ``k`` spans ``[k, k + 1)``): top-left corner and pixel size."""
        return {
            "origin_x_level0_px": (
                self.translation_x_um - self.scale_x_um / 2 - level0_translation_x_um
            )
            / mpp_x
            + 0.5,
            "origin_y_level0_px": (
                self.translation_y_um - self.scale_y_um / 2 - level0_translation_y_um
            )
            / mpp_y
            + 0.5,
            "level0_px_per_pixel_x": self.scale_x_um / mpp_x,
            "level0_px_per_pixel_y": self.scale_y_um / mpp_y,
        }


def nearest_indices(
    centres_um: NDArray[np.float64], scale_um: float, translation_um: float, n_in: int
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Index of the pixel (of a grid ``scale``, ``translation``) whose centre is nearest each point.

    Ties (a point halfway between two centres) go to the higher index, the rasteriser's half-open
    rule. Also returns which indices fall inside ``[0, n_in)``.
    """
    index = np.floor((np.asarray(centres_um, np.float64) - translation_um) / scale_um + 0.5).astype(
        np.int64
    )
    return index, (index >= 0) & (index < n_in)


class _Readable(Protocol):
    """An array-like a label can be read from (numpy arrays and zarr arrays both qualify)."""

    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def dtype(self) -> Any: ...
    def __getitem__(self, key: Any) -> Any: ...


def _axis_selection(
    index: NDArray[np.int64],
) -> tuple[slice | NDArray[np.int64], NDArray[np.intp] | None]:
    """How to read the sorted source pixels ``index`` along one axis: a strided slice when they
    form a regular progression, else each distinct pixel once plus the inverse to repeat them."""
    steps = np.diff(index)
    if index.size == 1 or (steps.size and steps[0] > 0 and np.all(steps == steps[0])):
        step = int(steps[0]) if steps.size else 1
        return slice(int(index[0]), int(index[-1]) + 1, step), None
    unique, inverse = np.unique(index, return_inverse=True)
    return unique, inverse


def resample_nearest(
    array: _Readable, source: Frame, target: Frame, *, fill: int | float = 0
) -> NDArray[Any]:
    """Sample ``array`` (``(..., H, W)`` on ``source``) at the pixel centres of ``target``.

    Each target pixel takes the source pixel whose centre is nearest its own (:func:`nearest_indices`);
    target pixels outside ``source`` get ``fill`` (a float fill turns integer output into float32).
    Labels stay labels (no averaging). A zarr array is read only where needed (a strided slice or
    an orthogonal selection of its last two axes), so a fine level is never loaded whole.
    """
    if tuple(array.shape[-2:]) != source.shape:
        raise FrameError(f"array has shape {tuple(array.shape)}, its frame {source.shape}")
    rows, rows_in = nearest_indices(
        target.centres_y_um(), source.scale_y_um, source.translation_y_um, source.height_px
    )
    cols, cols_in = nearest_indices(
        target.centres_x_um(), source.scale_x_um, source.translation_x_um, source.width_px
    )
    dtype = np.dtype(array.dtype)
    if isinstance(fill, float) and not np.issubdtype(dtype, np.floating):
        dtype = np.dtype(np.float32)
    lead = tuple(array.shape[:-2])
    out = np.full((*lead, target.height_px, target.width_px), fill, dtype=dtype)
    if not rows_in.any() or not cols_in.any():
        return out
    # Indices grow with the target index, so the inside pixels are one contiguous run per axis.
    r0, r1 = (int(i) for i in np.flatnonzero(rows_in)[[0, -1]])
    c0, c1 = (int(i) for i in np.flatnonzero(cols_in)[[0, -1]])
    if isinstance(array, np.ndarray):
        block = array[..., rows[r0 : r1 + 1, None], cols[None, c0 : c1 + 1]]
    else:
        row_sel, row_inverse = _axis_selection(rows[r0 : r1 + 1])
        col_sel, col_inverse = _axis_selection(cols[c0 : c1 + 1])
        lead_sel = tuple(slice(None) for _ in lead)
        if isinstance(row_sel, slice) and isinstance(col_sel, slice):
            block = np.asarray(array[(*lead_sel, row_sel, col_sel)])
        else:
            block = np.asarray(array.get_orthogonal_selection((*lead_sel, row_sel, col_sel)))  # type: ignore[attr-defined]
        if row_inverse is not None:
            block = block[..., row_inverse, :]
        if col_inverse is not None:
            block = block[..., col_inverse]
    out[..., r0 : r1 + 1, c0 : c1 + 1] = block
    return out


def aligned(level: Frame, target: Frame) -> bool:
    """Whether every pixel centre of ``target`` is a pixel centre of ``level`` (to 1e-6 px)."""
    for scale, translation, t_scale, t_translation, n in (
        (
            level.scale_y_um,
            level.translation_y_um,
            target.scale_y_um,
            target.translation_y_um,
            target.height_px,
        ),
        (
            level.scale_x_um,
            level.translation_x_um,
            target.scale_x_um,
            target.translation_x_um,
            target.width_px,
        ),
    ):
        first = (t_translation - translation) / scale
        step = t_scale / scale
        for value in (first, first + max(n - 1, 0) * step, step):
            if abs(value - round(value)) > 1e-6:
                return False
    return True


def level_for_target(levels: Sequence[Frame], target: Frame) -> Frame:
    """The label level to sample at ``target``'s pixel centres: the one way labels are read.

    Every label level holds the value at its own pixel centres (ingest registers them), so the
    coarsest level that is not coarser than ``target`` and whose centres *are* target centres
    gives the value at each target centre; when no coarser level lines up (e.g. a slide read
    as stored at 0.499 µm/px, or a grid offset by half a level pixel), the base level does.
    ``levels`` are finest first (as :func:`multiscale_frames` returns them).
    """
    if not levels:
        raise FrameError("no levels to choose from")
    chosen = levels[0]
    for level in levels[1:]:
        if (
            level.scale_y_um <= target.scale_y_um * 1.001
            and level.scale_x_um <= target.scale_x_um * 1.001
            and aligned(level, target)
        ):
            chosen = level
    return chosen


def _dataset_frame(dataset: Mapping[str, Any]) -> Frame:
    try:
        transforms = {t["type"]: t for t in dataset["coordinateTransformations"]}
        scale = transforms["scale"]["scale"]
        translation = transforms.get("translation", {"translation": [0.0] * len(scale)})[
            "translation"
        ]
        return Frame(
            float(scale[-2]),
            float(scale[-1]),
            float(translation[-2]),
            float(translation[-1]),
            path=str(dataset["path"]),
        )
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise FrameError(f"NGFF dataset without a usable scale ({exc!r})") from None


def multiscale_frames(
    attributes: Mapping[str, Any], shapes: Sequence[tuple[int, ...]] | None = None
) -> list[Frame]:
    """The frames of every level of the first NGFF 0.5 multiscale in ``attributes`` (``ome`` key).

    Shapes come from the arrays (pass them in level order) or are left 0 when only the metadata
    was read.
    """
    try:
        datasets = attributes["ome"]["multiscales"][0]["datasets"]
    except (KeyError, IndexError, TypeError) as exc:
        raise FrameError(f"no NGFF multiscales metadata ({exc!r})") from None
    frames = [_dataset_frame(d) for d in datasets]
    if shapes is not None:
        frames = [f.with_shape(s[-2], s[-1]) for f, s in zip(frames, shapes, strict=True)]
    return frames
