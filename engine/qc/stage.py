"""``slidefleet qc``: slide and annotation QC across a fleet, in parallel, into ``tables/qc``.

One Ray task per committed slide store measures the slide (:mod:`engine.qc.slide_task`); the
driver then compares every slide with its cohort (robust z-scores) and writes one row per slide
with its flags and their reasons. Flags named in ``qc.exclude`` gate a slide out of inference: it
gets a failures row (stage ``qc``) saying which flag and why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from tqdm import tqdm

from engine.cluster import ensure_ray
from engine.errors import SlideFleetError, WorkerDied
from engine.keys import content_hash
from engine.qc.cohort_flags import ANNOTATION_RULES, SLIDE_RULES, flag_cohort
from engine.qc.params import QcParams
from engine.qc.slide_task import qc_slide
from engine.runs import new_run_id
from engine.store import FleetLayout, read_completion
from engine.tables.failures import FailureRecord, write_failures
from engine.tables.schemas import QC_Z_COLUMNS
from engine.tables.writer import write_table_part

log = logging.getLogger(__name__)

# Row columns of the annotation measures, under the names the cohort rules use.
_ANNOTATION_MEASURES = {
    "density_per_mm2_tissue": "annotation_density_per_mm2",
    "area_um2_median": "annotation_area_um2_median",
    "degenerate_objects": "annotation_degenerate",
    "objects_outside_slide": "annotation_outside_slide",
    "objects_off_tissue": "annotation_off_tissue",
}


class QcExcluded(SlideFleetError, ValueError):
    """QC flagged the slide with a flag the job excludes, so it is not scored."""


@dataclass
class QcReport:
    run_id: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[FailureRecord] = field(default_factory=list)

    @property
    def excluded(self) -> list[str]:
        return [row["slide_id"] for row in self.rows if row["excluded"]]

    @property
    def flagged(self) -> list[str]:
        return [row["slide_id"] for row in self.rows if row["flags"]]


def _measure(store_path: Path, params: QcParams, class_map: str) -> dict[str, Any] | FailureRecord:
    slide_id = store_path.name.removesuffix(".ome.zarr")
    started = time.perf_counter()
    try:
        row = qc_slide(store_path, params, class_map)
        row["seconds"] = time.perf_counter() - started
        return row
    except SlideFleetError as exc:
        return FailureRecord.from_exception("qc", slide_id, exc, source_path=str(store_path))


_measure_task = ray.remote(num_cpus=1, max_retries=1)(_measure)


def params_hash(params: QcParams, class_map: str) -> str:
    # Whether ``run`` runs the stage does not change what it measures.
    payload = {"qc": params.model_dump(mode="json", exclude={"enabled"}), "class_map": class_map}
    return content_hash(payload)


def qc_is_current(root: Path | str, params: QcParams, class_map: str = "camelyon16") -> bool:
    """Whether every committed slide store has its newest QC verdict under these parameters.

    The parameters' hash covers ``exclude``, so a changed gate makes QC stale too.
    """
    from engine.qc.gate import qc_verdicts

    layout = FleetLayout(Path(root))
    verdicts = qc_verdicts(layout.tables_dir)
    digest = params_hash(params, class_map)
    stores = (
        [
            p.name.removesuffix(".ome.zarr")
            for p in layout.slides_dir.glob("*.ome.zarr")
            if read_completion(p) is not None
        ]
        if layout.slides_dir.is_dir()
        else []
    )
    return all(s in verdicts and verdicts[s].get("params_hash") == digest for s in stores)


def flag_rows(rows: Sequence[dict[str, Any]], params: QcParams) -> None:
    """Add ``flags``, ``reasons``, ``excluded`` and the ``z_<measure>`` robust z-scores to every
    row, judged against the whole cohort."""
    slide_z, slide_flags, slide_reasons = flag_cohort(rows, SLIDE_RULES, z_limit=params.z_limit)
    annotated = [{m: row.get(c) for m, c in _ANNOTATION_MEASURES.items()} for row in rows]
    ann_z, ann_flags, ann_reasons = flag_cohort(annotated, ANNOTATION_RULES, z_limit=params.z_limit)
    for index, row in enumerate(rows):
        z_by_column = {
            **slide_z[index],
            **{_ANNOTATION_MEASURES[m]: z for m, z in ann_z[index].items()},
        }
        for column in QC_Z_COLUMNS:
            row[f"z_{column}"] = z_by_column.get(column)
        row["flags"] = slide_flags[index] + [
            f for f in ann_flags[index] if f not in slide_flags[index]
        ]
        row["reasons"] = slide_reasons[index] + ann_reasons[index]
        row["excluded"] = any(flag in params.exclude for flag in row["flags"])


def qc(
    root: Path | str,
    *,
    params: QcParams | None = None,
    class_map: str = "camelyon16",
    slide_ids: Sequence[str] | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    progress: bool = True,
    run_id: str | None = None,
) -> QcReport:
    """QC every committed slide store under ``root`` (or the ``slide_ids`` given).

    Writes ``tables/qc`` (one row per measured slide) and a failures row for every slide that
    could not be measured or that a flag in ``params.exclude`` keeps out of inference.
    """
    params = params or QcParams()
    layout = FleetLayout(Path(root))
    report = QcReport(run_id=run_id or new_run_id())
    wanted = None if slide_ids is None else set(slide_ids)
    stores = sorted(
        path
        for path in layout.slides_dir.glob("*.ome.zarr")
        if read_completion(path) is not None
        and (wanted is None or path.name.removesuffix(".ome.zarr") in wanted)
    )
    if stores:
        ensure_ray(address, num_cpus=num_cpus)
        pending = {_measure_task.remote(path, params, class_map): path for path in stores}
        with tqdm(total=len(stores), desc="qc", unit="slide", disable=not progress) as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                path = pending.pop(done[0])
                try:
                    outcome = ray.get(done[0])
                except ray.exceptions.RayError as exc:
                    outcome = FailureRecord.from_exception(
                        "qc",
                        path.name.removesuffix(".ome.zarr"),
                        WorkerDied(f"the worker measuring this slide died ({type(exc).__name__})"),
                        source_path=str(path),
                    )
                if isinstance(outcome, FailureRecord):
                    report.failures.append(outcome)
                else:
                    report.rows.append(outcome)
                bar.update()
    report.rows.sort(key=lambda row: row["slide_id"])
    flag_rows(report.rows, params)
    digest = params_hash(params, class_map)
    for row in report.rows:
        row["params_hash"] = digest
        if row["excluded"]:
            gating = [r for r in row["reasons"] if r.split(":", 1)[0] in params.exclude]
            report.failures.append(
                FailureRecord.from_exception(
                    "qc",
                    row["slide_id"],
                    QcExcluded(
                        "kept out of inference by qc.exclude: "
                        + "; ".join(gating)
                        + ". Rescan or clean the slide, or remove the flag from qc.exclude."
                    ),
                )
            )
    write_table_part(layout.tables_dir, "qc", report.rows, run_id=report.run_id)
    write_failures(layout.tables_dir, report.failures, run_id=report.run_id)
    return report
