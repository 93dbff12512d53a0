"""Read side of an ingested slide store: geometry, pyramid levels and labels, from its metadata."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numpy.typing import NDArray

from engine.errors import StoreIncomplete
from engine.store.completion import read_completion
from engine.store.frame import Frame, multiscale_frames

COVERAGE_GROUP = "slidefleet-coverage"
"""Group of a sparse store holding one uint8 grid per sparse level: 1 where the chunk was written."""


def multiscale_levels(group: zarr.Group) -> list[Frame]:
    """Frames of every level of an NGFF multiscale group (its scale, translation, path and shape)."""
    attributes: dict[str, Any] = dict(group.attrs.asdict())
    frames = multiscale_frames(attributes)
    return [
        f.with_shape(*zarr.open_array(group.store_path / f.path, mode="r").shape[-2:])
        for f in frames
    ]


@dataclass(frozen=True)
class SlideStore:
    """An ingested ``<slide_id>.ome.zarr`` whose completion record exists."""

    path: Path
    slide_id: str
    mpp_x: float
    mpp_y: float
    width_px: int
    height_px: int
    source_sha256: str
    levels: tuple[Frame, ...]
    label_names: tuple[str, ...]
    record: dict[str, Any]

    @classmethod
    def open(cls, path: Path) -> SlideStore:
        path = Path(path)
        record = read_completion(path)
        if record is None:
            raise StoreIncomplete(
                f"{path}: no completion record; the slide was not (fully) ingested."
            )
        group = zarr.open_group(path, mode="r")
        meta: dict[str, Any] = dict(group.attrs.asdict()["slidefleet"])  # type: ignore[arg-type]
        label_names: tuple[str, ...] = ()
        if "labels" in group:
            labels_attrs: dict[str, Any] = dict(group["labels"].attrs.asdict())
            label_names = tuple(labels_attrs.get("ome", {}).get("labels", []))
        return cls(
            path=path,
            slide_id=str(meta["slide_id"]),
            mpp_x=float(meta["mpp_x"]),
            mpp_y=float(meta["mpp_y"]),
            width_px=int(meta["width_px"]),
            height_px=int(meta["height_px"]),
            source_sha256=str(meta["source_sha256"]),
            levels=tuple(multiscale_levels(group)),
            label_names=label_names,
            record=record,
        )

    @property
    def mpp(self) -> float:
        return (self.mpp_x + self.mpp_y) / 2

    def image(self, level: Frame) -> zarr.Array[Any]:
        return zarr.open_array(self.path / level.path, mode="r")

    def level(self, path: str) -> Frame:
        """The image level stored at ``path``."""
        for level in self.levels:
            if level.path == path:
                return level
        raise KeyError(f"{self.path}: no image level {path!r}")

    def label_levels(self, name: str) -> list[Frame]:
        if name not in self.label_names:
            raise KeyError(f"{self.path}: no label {name!r} (has {list(self.label_names)})")
        return multiscale_levels(zarr.open_group(self.path / "labels" / name, mode="r"))

    def label(self, name: str, level: Frame) -> zarr.Array[Any]:
        return zarr.open_array(self.path / "labels" / name / level.path, mode="r")

    @property
    def sparse(self) -> dict[str, Any]:
        """The store's sparse provenance (``{"enabled": False}`` for full stores and older ones)."""
        attributes: dict[str, Any] = dict(zarr.open_group(self.path, mode="r").attrs.asdict())
        meta: dict[str, Any] = dict(attributes.get("slidefleet") or {})
        return dict(meta.get("sparse") or {"enabled": False})

    def chunk_coverage(self, level: Frame) -> tuple[NDArray[np.bool_], int] | None:
        """(grid, chunk_px) of the chunks of ``level`` written from the slide, or None if complete."""
        sparse = self.sparse
        if not sparse.get("enabled") or level.path not in sparse.get("sparse_levels", []):
            return None
        grid = np.asarray(
            zarr.open_array(self.path / COVERAGE_GROUP / level.path, mode="r")[:]
        ).astype(bool)
        return grid, int(self.image(level).chunks[-1])

    def finest_level_not_coarser_than(self, target_um: float) -> Frame:
        """Coarsest image level whose pixels are at most ``target_um`` wide (level 0 if none)."""
        best = self.levels[0]
        for level in self.levels:
            if max(level.scale_x_um, level.scale_y_um) <= target_um * 1.01:
                best = level
        return best
