"""Reading what views draw: prediction stores, post tables, failures. The only I/O on inputs."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import zarr
from numpy.typing import NDArray

from engine.errors import StoreIncomplete
from engine.store.completion import read_completion
from engine.store.frame import Frame
from engine.store.slide_store import multiscale_levels
from engine.tables import read_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictionStore:
    """A completed ``predictions/<model_id>/<slide_id>.zarr``: (C, H, W) float32 levels, NaN unscored."""

    path: Path
    slide_id: str
    model_id: str
    class_names: tuple[str, ...]
    kind: str
    levels: tuple[Frame, ...]
    attributes: dict[str, Any]

    @classmethod
    def open(cls, path: Path) -> PredictionStore:
        path = Path(path)
        if read_completion(path) is None:
            raise StoreIncomplete(
                f"{path}: no completed prediction (no completion record); run infer for this slide first."
            )
        group = zarr.open_group(path, mode="r")
        attrs: Any = group.attrs.asdict()
        meta: dict[str, Any] = dict(attrs["slidefleet"])
        return cls(
            path=path,
            slide_id=str(meta["slide_id"]),
            model_id=str(meta["model_id"]),
            class_names=tuple(meta["class_names"]),
            kind=str(meta.get("kind", "")),
            levels=tuple(multiscale_levels(group)),
            attributes=meta,
        )

    def channel(self, level: Frame, index: int) -> NDArray[np.float32]:
        return np.asarray(
            zarr.open_array(self.path / level.path, mode="r")[index], dtype=np.float32
        )

    def all_channels(self, level: Frame) -> NDArray[np.float32]:
        return np.asarray(zarr.open_array(self.path / level.path, mode="r")[:], dtype=np.float32)


def prediction_attributes(path: Path) -> dict[str, Any]:
    """The ``slidefleet`` attributes of a prediction store (model, run, parameters), or ``{}``."""
    try:
        attrs: Any = zarr.open_group(path, mode="r").attrs.asdict()
    except (FileNotFoundError, KeyError, ValueError):
        return {}
    meta = attrs.get("slidefleet")
    return dict(meta) if isinstance(meta, dict) else {}


def completed_prediction_ids(predictions_dir: Path) -> list[str]:
    """Slide ids whose prediction store under ``predictions_dir`` has a completion record."""
    if not predictions_dir.is_dir():
        return []
    found = []
    for path in sorted(predictions_dir.glob("*.zarr")):
        if not path.name.startswith(".") and read_completion(path) is not None:
            found.append(path.name.removesuffix(".zarr"))
    return found


def _rows(table: pa.Table, model_id: str | None) -> list[dict[str, Any]]:
    if table.num_rows and model_id is not None and "model_id" in table.column_names:
        table = table.filter(pc.equal(table["model_id"], model_id))
    return table.to_pylist()


def _latest(rows: Iterable[Mapping[str, Any]], key: str) -> list[dict[str, Any]]:
    """The most recently written row per ``key`` value, in key order."""
    best: dict[Any, dict[str, Any]] = {}
    for row in rows:
        current = best.get(row[key])
        if current is None or row["written_at"] >= current["written_at"]:
            best[row[key]] = dict(row)
    return [best[k] for k in sorted(best)]


@dataclass
class PostResults:
    """The latest post-processing of one model: rows of one ``params_hash`` (the newest)."""

    params_hash: str | None = None
    slides: list[dict[str, Any]] = field(default_factory=list)
    cohort: list[dict[str, Any]] = field(default_factory=list)
    thresholds: list[dict[str, Any]] = field(default_factory=list)
    record: dict[str, Any] | None = None
    """Post's completion record of that run (its parameters, threshold, calibration slides)."""

    @property
    def params(self) -> dict[str, Any]:
        """Post's parameters (``PostParams`` as JSON), or ``{}`` without a record."""
        return dict((self.record or {}).get("params") or {})

    regions: list[dict[str, Any]] = field(default_factory=list)
    """Region rows (with outlines) of the same run as ``slides``."""

    def slide(self, slide_id: str) -> dict[str, Any] | None:
        for row in self.slides:
            if row["slide_id"] == slide_id:
                return row
        return None

    def regions_of(self, slide_id: str) -> list[dict[str, Any]]:
        """Post's regions of one slide (its outlines), in region order."""
        return [r for r in self.regions if r["slide_id"] == slide_id]

    def per_slide(self, slide_ids: Iterable[str]) -> dict[str, PostResults]:
        """Each slide's own rows with the run's record: what one slide's views need (a task
        then carries its slide's rows, not the cohort's)."""
        rows = {str(r["slide_id"]): r for r in self.slides}
        regions: dict[str, list[dict[str, Any]]] = {}
        for region in self.regions:
            regions.setdefault(str(region["slide_id"]), []).append(region)
        return {
            slide_id: PostResults(
                self.params_hash,
                [rows[slide_id]] if slide_id in rows else [],
                record=self.record,
                regions=regions.get(slide_id, []),
            )
            for slide_id in slide_ids
        }


def read_post_results(root: Path, model_id: str) -> PostResults:
    """Slides, cohort and threshold rows of the newest post run for ``model_id`` (empty if none)."""
    from engine.post.cohort import read_post_record

    tables_dir = Path(root) / "tables"
    slides = _rows(read_table(tables_dir, "slides"), model_id)
    if not slides:
        return PostResults()
    newest = max(slides, key=lambda r: r["written_at"])
    params_hash = newest["params_hash"]

    def same(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in rows if r.get("params_hash") == params_hash]

    cohort = same(_rows(read_table(tables_dir, "cohort"), model_id))
    thresholds = same(_rows(read_table(tables_dir, "thresholds"), model_id))
    latest_slides = _latest(same(slides), "slide_id")
    runs = {(r["slide_id"], r["run_id"]) for r in latest_slides}
    regions = [
        r
        for r in same(_rows(read_table(tables_dir, "regions"), model_id))
        if (r["slide_id"], r["run_id"]) in runs
    ]
    # Keep only each table's newest run of these parameters (reruns append parts).
    for rows in (cohort, thresholds):
        if rows:
            last_run = max(rows, key=lambda r: r["written_at"])["run_id"]
            rows[:] = [r for r in rows if r["run_id"] == last_run]
    thresholds.sort(key=lambda r: r["threshold"])
    record = read_post_record(root, model_id, params_hash)
    return PostResults(params_hash, latest_slides, cohort, thresholds, record, regions)


def read_failure_rows(
    tables_dir: Path, model_id: str, *, resolved: Callable[[dict[str, Any]], bool] | None = None
) -> list[dict[str, Any]]:
    """Failures that concern this model's results: its own, and model-less ones (manifest, ingest).

    The newest row per (stage, slide) is kept, and left out when ``resolved(row)`` says a later
    run fixed it (the slide now has that stage's output).
    """
    table = read_table(tables_dir, "failures")
    rows = [r for r in table.to_pylist() if r.get("model_id") in (None, model_id)]
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["stage"], row["slide_id"])
        if key not in newest or row["written_at"] >= newest[key]["written_at"]:
            newest[key] = row
    kept = [r for r in newest.values() if resolved is None or not resolved(r)]
    return sorted(kept, key=lambda r: (r["stage"], r["slide_id"]))


def read_run_records(runs_dir: Path, run_ids: Iterable[str]) -> dict[str, Any]:
    """``runs/<run_id>.json`` of the given runs, where present and readable."""
    records: dict[str, Any] = {}
    for run_id in sorted(set(run_ids)):
        path = runs_dir / f"{run_id}.json"
        try:
            records[run_id] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
    return records
