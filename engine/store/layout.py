"""Where everything lives under a fleet root, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.errors import InvalidSlideId
from engine.ids import check_slide_id


@dataclass(frozen=True)
class FleetLayout:
    """Paths of a fleet root (see DESIGN.md's store layout)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())

    @property
    def slides_dir(self) -> Path:
        return self.root / "slides"

    @property
    def tables_dir(self) -> Path:
        return self.root / "tables"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def predictions_dir(self) -> Path:
        return self.root / "predictions"

    @property
    def features_dir(self) -> Path:
        return self.root / "features"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def views_dir(self) -> Path:
        return self.root / "views"

    @property
    def hash_cache(self) -> Path:
        """Content hashes of input files keyed by (path, size, mtime_ns, inode)."""
        return self.root / "cache" / "content-hashes.json"

    def _inside(self, path: Path, slide_id: str) -> Path:
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise InvalidSlideId(
                f"slide_id {slide_id!r} would write outside the fleet root {self.root}."
            )
        return path

    def slide_store(self, slide_id: str) -> Path:
        check_slide_id(slide_id)
        return self._inside(self.slides_dir / f"{slide_id}.ome.zarr", slide_id)

    def prediction_store(self, model_id: str, slide_id: str) -> Path:
        check_slide_id(slide_id)
        return self._inside(self.predictions_dir / model_id / f"{slide_id}.zarr", slide_id)

    def features_store(self, model_id: str, slide_id: str) -> Path:
        """``features/<model_id>/<slide_id>.zarr``: one embedding per tissue tile."""
        check_slide_id(slide_id)
        return self._inside(self.features_dir / model_id / f"{slide_id}.zarr", slide_id)

    def table_dir(self, table: str) -> Path:
        return self.tables_dir / table
