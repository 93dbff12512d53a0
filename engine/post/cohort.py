"""``post``: one model's score maps over the whole cohort → Parquet tables, with Dask.

Two passes of per-slide ``dask.delayed`` tasks, each opening its zarr stores inside the task:

1. **Fit.** Sweep counts of every calibration slide (``split == params.calibration_split``),
   summed by a tree reduction on the workers; the threshold of each objective is fitted on that
   sum. Nothing from any other split enters the fit.
2. **Apply.** Every slide: scores (z-scored if asked) → the fitted threshold → morphology →
   regions → quantities → metrics against ground truth → rows.

Then the cohort summary, and the tables ``slides``, ``regions``, ``thresholds``, ``cohort`` (one
Parquet part each, partitioned by ``model_id``) and ``failures`` (stage ``post``). The last
thing written is the run's completion record ``tables/_post/<model_id>/<params_hash>.json``: it
holds the key of every input (prediction and slide store completion keys, split, label) and the
parts written. A run whose record matches the current inputs is not recomputed: its tables are
read back. A newer complete run replaces the parts of the one it supersedes, so the tables hold
one run per (model_id, params_hash).

Memory: a task holds one slide's maps on the prediction grid (a 100,000² px slide at 0.25 µm
scored at 8 µm is 3,125² px: 39 MB of float32), never an RGB level and never two slides; the
driver holds rows only. A map too large for one worker would be read as a dask array inside its
task and labelled with ``dask_image.ndmeasure.label`` (exact across chunks, but slow per-label
measurements): not needed at tile resolution, so not implemented.

No calibration slide with tumour: the thresholds table stays empty and a ``ThresholdFitError``
row (slide_id ``*``) goes to failures; slides are then thresholded at
``params.fallback_threshold`` (objective ``fixed``) if one is configured, else not at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from dask import delayed
from tqdm.auto import tqdm

from engine import __version__
from engine.errors import SlideFleetError, StoreIncomplete
from engine.metrics import cohort_summary, macro_dice, miou, per_class_iou_dice
from engine.post.compute import OBJECTIVES, ThresholdFitError, fit_threshold, sweep_table
from engine.post.dask_cluster import SlideExecutor, open_executor
from engine.post.params import PostParams
from engine.post.slide_task import (
    STAGE,
    SlidePlan,
    SlideResult,
    SweepPart,
    slide_task,
    sum_sweeps,
    sweep_task,
)
from engine.runs import new_run_id
from engine.store import FleetLayout, read_completion
from engine.store.atomic import atomic_write_bytes
from engine.tables import FailureRecord, write_table_part
from engine.tables.schemas import TABLE_SCHEMAS

if TYPE_CHECKING:
    from engine.models import RegisteredModel

log = logging.getLogger(__name__)

RESULT_TABLES = ("slides", "regions", "thresholds", "cohort")
COHORT_SLIDE_ID = "*"
"""``slide_id`` of a failure that concerns the whole cohort (no threshold could be fitted)."""
RECORD_FORMAT = 1
_REDUCE_FAN_IN = 8


class PredictionMissing(StoreIncomplete):
    """The slide has no complete prediction for this model: run ``slidefleet infer`` first."""


@dataclass
class PostReport:
    """Outcome of one post run: the tables as Arrow tables, and the failures."""

    run_id: str
    model: RegisteredModel
    params: PostParams
    params_hash: str
    tables: dict[str, pa.Table]
    failures: list[FailureRecord] = field(default_factory=list)
    threshold: float | None = None
    """Threshold applied to every slide (``None``: none could be fitted and no fallback)."""
    threshold_objective: str | None = None
    fitted_thresholds: dict[str, float] = field(default_factory=dict)
    """Threshold fitted on the calibration split for each objective that has one."""
    calibration_slide_ids: list[str] = field(default_factory=list)
    """Slides whose sweep counts the fit summed."""
    reused: bool = False
    """True when an up-to-date run's tables were read back instead of recomputed."""
    scheduler: str = ""
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    record_path: Path | None = None

    @property
    def slides(self) -> pa.Table:
        return self.tables["slides"]

    @property
    def regions(self) -> pa.Table:
        return self.tables["regions"]

    @property
    def thresholds(self) -> pa.Table:
        return self.tables["thresholds"]

    @property
    def cohort(self) -> pa.Table:
        return self.tables["cohort"]


# --- planning: which slides, and the key of everything a run reads ---------------------------


@dataclass(frozen=True)
class CohortPlan:
    """The slides post can run on, the ones it cannot (as failures), and the inputs' key."""

    plans: list[SlidePlan]
    failures: list[FailureRecord]
    inputs: dict[str, str]
    """slide_id -> digest of its prediction and slide-store keys, split and label (or why missing)."""


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def _resolve(layout: FleetLayout, model: str) -> RegisteredModel:
    from engine.models import ModelRegistry  # imports torch: keep it off the Dask workers' path

    return ModelRegistry(layout.root).resolve(model)


def _store_names(directory: Path, suffix: str) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(
        p.name.removesuffix(suffix)
        for p in directory.glob(f"*{suffix}")
        if not p.name.startswith(".")
    )


def _positive_channel(model: RegisteredModel, params: PostParams) -> int:
    names = list(model.card.class_names)
    wanted = params.positive_class or model.card.positive_class or names[-1]
    if wanted not in names:
        raise SlideFleetError(f"positive class {wanted!r} is not a class of {model.ref} ({names})")
    return names.index(wanted)


def plan_cohort(layout: FleetLayout, model: RegisteredModel, params: PostParams) -> CohortPlan:
    """Every slide with a slide store or a prediction, from completion records only (cheap)."""
    channel = _positive_channel(model, params)
    n_classes = len(model.card.class_names)
    multiclass = n_classes > 1 and model.card.kind != "anomaly_scorer"
    prediction_dir = layout.predictions_dir / model.model_id
    slide_ids = sorted(
        set(_store_names(layout.slides_dir, ".ome.zarr"))
        | set(_store_names(prediction_dir, ".zarr"))
    )
    plans: list[SlidePlan] = []
    failures: list[FailureRecord] = []
    inputs: dict[str, str] = {}
    for slide_id in slide_ids:
        slide_path = layout.slide_store(slide_id)
        prediction_path = layout.prediction_store(model.model_id, slide_id)
        slide_record = read_completion(slide_path)
        prediction_record = read_completion(prediction_path)
        error: SlideFleetError | None = None
        if slide_record is None:
            error = StoreIncomplete(
                f"{slide_path}: no complete slide store (not ingested, or ingest failed)."
            )
        elif prediction_record is None:
            error = PredictionMissing(
                f"{prediction_path}: no complete prediction of {model.ref} (model_id "
                f"{model.model_id}) for this slide; run `slidefleet infer` for it."
            )
        if error is not None:
            failures.append(
                FailureRecord.from_exception(
                    STAGE,
                    slide_id,
                    error,
                    source_path=str(prediction_path),
                    model_id=model.model_id,
                )
            )
            inputs[slide_id] = f"missing:{type(error).__name__}"
            continue
        assert slide_record is not None
        assert prediction_record is not None
        result = slide_record.get("result", {})
        split, label = result.get("split"), result.get("label")
        inputs[slide_id] = _digest(
            {
                "prediction": prediction_record.get("input_key"),
                "slide": slide_record.get("input_key"),
                "split": split,
                "label": label,
            }
        )
        plans.append(
            SlidePlan(
                slide_id=slide_id,
                slide_store=str(slide_path),
                prediction=str(prediction_path),
                split=split,
                label=label,
                channel=channel,
                n_classes=n_classes,
                multiclass=multiclass,
            )
        )
    return CohortPlan(plans, failures, inputs)


# --- completion record -----------------------------------------------------------------------


def record_path(layout: FleetLayout, model_id: str, params_hash: str) -> Path:
    """Where the completion record of post for (model_id, params_hash) lives."""
    return layout.tables_dir / "_post" / model_id / f"{params_hash}.json"


def read_post_record(root: Path | str, model_id: str, params_hash: str) -> dict[str, Any] | None:
    """The completion record of the last complete post run, or ``None``."""
    path = record_path(FleetLayout(Path(root)), model_id, params_hash)
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and record.get("format") == RECORD_FORMAT else None


def _record_is_current(
    layout: FleetLayout, record: dict[str, Any] | None, inputs: dict[str, str]
) -> bool:
    if record is None or record.get("inputs") != inputs:
        return False
    parts = [p for paths in record.get("parts", {}).values() for p in paths]
    return all((layout.tables_dir / p).exists() for p in parts)


def stale_slides(root: Path | str, model: str, params: PostParams | None = None) -> dict[str, str]:
    """Slides whose inputs changed since the last complete post run: slide_id -> reason.

    ``{"*": ...}`` when there is no complete run for these parameters at all.
    """
    params = params or PostParams()
    layout = FleetLayout(Path(root))
    registered = _resolve(layout, model)
    plan = plan_cohort(layout, registered, params)
    record = read_post_record(layout.root, registered.model_id, params.output_hash())
    if record is None:
        return {COHORT_SLIDE_ID: "no complete post run for this model and these parameters"}
    old: dict[str, str] = record.get("inputs", {})
    stale = {}
    for slide_id in sorted(set(old) | set(plan.inputs)):
        if slide_id not in old:
            stale[slide_id] = "new slide"
        elif slide_id not in plan.inputs:
            stale[slide_id] = "slide or prediction removed"
        elif old[slide_id] != plan.inputs[slide_id]:
            stale[slide_id] = "prediction, slide store, split or label changed"
    if not stale and not _record_is_current(layout, record, plan.inputs):
        stale[COHORT_SLIDE_ID] = "table parts of the last run are missing"
    return stale


def post_is_current(root: Path | str, model: str, params: PostParams | None = None) -> bool:
    """True when re-running ``post`` with these parameters would only read its tables back."""
    return not stale_slides(root, model, params)


# --- rows and tables -------------------------------------------------------------------------


def _keyed(rows: Iterable[Mapping[str, Any]], keys: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{**keys, **row} for row in rows]


def _threshold_rows(
    part: SweepPart, params: PostParams, fitted: dict[str, float]
) -> list[dict[str, Any]]:
    assert part.counts is not None
    rows = sweep_table(part.counts)
    for row in rows:
        chosen = [o for o in OBJECTIVES if o in fitted and fitted[o] == row["threshold"]]
        row.update(
            {
                "fitted_on": params.calibration_split,
                "score_kind": params.score,
                "n_slides_fitted": len(part.slide_ids),
                "chosen_for": ",".join(chosen) or None,
            }
        )
    return rows


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def multiclass_summary(
    rows: Sequence[Mapping[str, Any]], class_names: Sequence[str]
) -> list[dict[str, Any]]:
    """Cohort rows of a multi-class model, long format like :func:`cohort_summary`.

    Per scope (all, each split): ``micro_miou`` / ``micro_macro_dice`` and per-class
    ``micro_iou[<class>]`` / ``micro_dice[<class>]`` from the summed confusion matrix,
    ``macro_miou`` / ``median_miou`` / ``macro_macro_dice`` over slides, and the pooled matrix
    as ``confusion[truth=<class>,pred=<class>]`` pixel counts.
    """
    rows = [r for r in rows if r.get("confusion_matrix") is not None]
    if not rows:
        return []
    splits = sorted({str(r["split"]) for r in rows if r.get("split") is not None})
    out: list[dict[str, Any]] = []
    for split in ["all", *splits]:
        scoped = [r for r in rows if split == "all" or str(r.get("split")) == split]
        n = len(scoped)

        def stat(
            name: str,
            value: float | None,
            n_undefined: int = 0,
            *,
            _split: str = split,
            _n: int = n,
        ) -> dict[str, Any]:
            scope = "all" if _split == "all" else f"split={_split}"
            return {
                "scope": scope,
                "split": _split,
                "burden": "all",
                "statistic": name,
                "value": value,
                "n_slides": _n,
                "n_undefined": n_undefined,
            }

        cm = np.sum([np.asarray(r["confusion_matrix"], dtype=np.int64) for r in scoped], axis=0)
        iou, dice = per_class_iou_dice(cm)
        out += [stat("micro_miou", miou(cm)), stat("micro_macro_dice", macro_dice(cm))]
        for name, i_value, d_value in zip(class_names, iou, dice, strict=True):
            out += [stat(f"micro_iou[{name}]", i_value), stat(f"micro_dice[{name}]", d_value)]
        for metric in ("miou", "macro_dice"):
            values = [float(r[metric]) for r in scoped if r.get(metric) is not None]
            undefined = n - len(values)
            out.append(
                stat(f"macro_{metric}", float(np.mean(values)) if values else None, undefined)
            )
            out.append(stat(f"median_{metric}", _median(values), undefined))
        for t, truth_name in enumerate(class_names):
            for p, pred_name in enumerate(class_names):
                out.append(stat(f"confusion[truth={truth_name},pred={pred_name}]", float(cm[t, p])))
    return out


def _table_from_part(path: Path | None, name: str) -> pa.Table:
    if path is None:
        return TABLE_SCHEMAS[name].empty_table()
    return pq.read_table(path, schema=TABLE_SCHEMAS[name])


def _read_back(
    layout: FleetLayout, record: dict[str, Any]
) -> tuple[dict[str, pa.Table], list[FailureRecord]]:
    tables: dict[str, pa.Table] = {}
    for name in (*RESULT_TABLES, "failures"):
        paths = [layout.tables_dir / p for p in record.get("parts", {}).get(name, [])]
        parts = [_table_from_part(p, name) for p in paths]
        tables[name] = pa.concat_tables(parts) if parts else TABLE_SCHEMAS[name].empty_table()
    failures = [
        FailureRecord(
            stage=r["stage"],
            slide_id=r["slide_id"],
            error_type=r["error_type"],
            message=r["message"],
            source_path=r["source_path"],
            model_id=r["model_id"],
        )
        for r in tables.pop("failures").to_pylist()
    ]
    return tables, failures


def _remove_parts(layout: FleetLayout, record: dict[str, Any] | None, keep: set[str]) -> None:
    if record is None:
        return
    for paths in record.get("parts", {}).values():
        for relative in paths:
            if relative not in keep:
                (layout.tables_dir / relative).unlink(missing_ok=True)


# --- the run --------------------------------------------------------------------------------


def _tree_sum(parts: list[Any]) -> Any:
    """Delayed tree reduction of pass-1 parts (fan-in 8), so only the sum reaches the driver."""
    if not parts:
        return delayed(sum_sweeps)()
    while len(parts) > 1:
        parts = [
            delayed(sum_sweeps, pure=True)(*parts[i : i + _REDUCE_FAN_IN])
            for i in range(0, len(parts), _REDUCE_FAN_IN)
        ]
    return parts[0]


def _fit(part: SweepPart, params: PostParams) -> tuple[dict[str, float], str | None]:
    """Fitted threshold per objective, and why the chosen objective has none (or ``None``)."""
    fitted: dict[str, float] = {}
    reason: str | None = None
    for objective in OBJECTIVES:
        if part.counts is None:
            reason = (
                f"no calibration slide with ground truth (split {params.calibration_split!r}) "
                "to fit a threshold on"
            )
            break
        try:
            fitted[objective] = fit_threshold(part.counts, objective)
        except ThresholdFitError as exc:
            if objective == params.objective:
                reason = f"{exc} ({len(part.slide_ids)} calibration slides)"
    return fitted, reason


def _key(kind: str, model_id: str, params_hash: str, run_id: str, slide_id: str) -> str:
    # Unique per run: two runs sharing a Dask scheduler must never share a task.
    return f"post-{kind}-{model_id}-{params_hash}-{run_id}-{slide_id}"


def _fit_pass(
    executor: SlideExecutor,
    plans: Sequence[SlidePlan],
    params: PostParams,
    report: PostReport,
    failures: list[FailureRecord],
) -> list[dict[str, Any]]:
    """Pass 1: sum the calibration slides' sweeps on the workers, fit; return the sweep rows."""
    model_id = report.model.model_id
    parts = [
        delayed(sweep_task, pure=True)(
            p,
            params,
            model_id,
            dask_key_name=_key("sweep", model_id, report.params_hash, report.run_id, p.slide_id),
        )
        for p in plans
    ]
    (summed,) = executor.compute([_tree_sum(parts)])
    if isinstance(summed, BaseException):  # the reduction itself was lost, not one slide
        raise summed
    failures += summed.failures
    fitted, reason = _fit(summed, params)
    report.fitted_thresholds = fitted
    report.calibration_slide_ids = sorted(summed.slide_ids)
    if reason is None:
        report.threshold, report.threshold_objective = fitted[params.objective], params.objective
        return _threshold_rows(summed, params, fitted)
    fallback = params.fallback_threshold
    note = (
        f"; slides are thresholded at the fallback {fallback}"
        if fallback is not None
        else "; set post.fallback_threshold to threshold slides anyway"
    )
    failures.append(
        FailureRecord(
            STAGE, COHORT_SLIDE_ID, ThresholdFitError.__name__, reason + note, model_id=model_id
        )
    )
    if fallback is not None:
        report.threshold, report.threshold_objective = fallback, "fixed"
    return []


def _apply_pass(
    executor: SlideExecutor,
    plans: Sequence[SlidePlan],
    params: PostParams,
    report: PostReport,
    failures: list[FailureRecord],
    progress: bool,
) -> list[SlideResult]:
    """Pass 2: every slide at the one threshold; failed tasks become failure rows."""
    if report.threshold is None or not plans:
        return []
    model_id = report.model.model_id
    tasks = [
        delayed(slide_task, pure=True)(
            p,
            params,
            model_id,
            report.threshold,
            report.threshold_objective,
            dask_key_name=_key("slide", model_id, report.params_hash, report.run_id, p.slide_id),
        )
        for p in plans
    ]
    with tqdm(
        total=len(tasks), desc=f"post {report.model.ref}", unit="slide", disable=not progress
    ) as bar:
        outcomes = executor.compute(tasks, progress=bar.update)
    results: list[SlideResult] = []
    for p, outcome in zip(plans, outcomes, strict=True):
        if isinstance(outcome, SlideResult):
            results.append(outcome)
        elif isinstance(outcome, FailureRecord):
            failures.append(outcome)
        else:  # the task itself was lost (a worker died): still one slide's failure
            failures.append(
                FailureRecord.from_exception(
                    STAGE, p.slide_id, outcome, source_path=p.prediction, model_id=model_id
                )
            )
    return results


def _write_outputs(
    layout: FleetLayout,
    report: PostReport,
    plan: CohortPlan,
    results: Sequence[SlideResult],
    threshold_rows: list[dict[str, Any]],
    previous: dict[str, Any] | None,
) -> None:
    """One Parquet part per table, then the completion record, then drop superseded parts."""
    model_id = report.model.model_id
    keys = {"model_id": model_id, "params_hash": report.params_hash}
    slide_rows = [r.row for r in results]
    truth_rows = [r for r in slide_rows if r.get("has_ground_truth")]
    cohort_rows = cohort_summary(truth_rows) if truth_rows else []
    cohort_rows += multiclass_summary(truth_rows, report.model.card.class_names)
    rows = {
        "slides": _keyed(slide_rows, keys),
        "regions": _keyed((r for res in results for r in res.regions), keys),
        "thresholds": _keyed(threshold_rows, keys),
        "cohort": _keyed(cohort_rows, keys),
    }
    written: dict[str, Path | None] = {
        name: write_table_part(
            layout.tables_dir,
            name,
            rows[name],
            partition={"model_id": model_id},
            run_id=report.run_id,
        )
        for name in RESULT_TABLES
    }
    written["failures"] = write_table_part(
        layout.tables_dir,
        "failures",
        [f.__dict__ for f in report.failures],
        partition={"stage": STAGE},
        run_id=report.run_id,
    )
    report.tables = {name: _table_from_part(written[name], name) for name in RESULT_TABLES}
    parts = {
        name: [str(p.relative_to(layout.tables_dir))] if p else [] for name, p in written.items()
    }
    record = {
        "format": RECORD_FORMAT,
        "model_id": model_id,
        "model": report.model.ref,
        "params_hash": report.params_hash,
        "params": report.params.model_dump(mode="json", exclude={"execution"}),
        "run_id": report.run_id,
        "engine_version": __version__,
        "inputs": plan.inputs,
        "parts": parts,
        "threshold": report.threshold,
        "threshold_objective": report.threshold_objective,
        "fitted_thresholds": report.fitted_thresholds,
        "calibration_slide_ids": report.calibration_slide_ids,
        "n_slides": len(slide_rows),
        "n_failures": len(report.failures),
    }
    assert report.record_path is not None
    atomic_write_bytes(report.record_path, json.dumps(record, indent=2, sort_keys=True).encode())
    _remove_parts(layout, previous, keep={p for paths in parts.values() for p in paths})


def _reuse(layout: FleetLayout, report: PostReport, previous: dict[str, Any]) -> None:
    report.tables, report.failures = _read_back(layout, previous)
    report.run_id = previous["run_id"]
    report.reused = True
    report.threshold = previous.get("threshold")
    report.threshold_objective = previous.get("threshold_objective")
    report.fitted_thresholds = previous.get("fitted_thresholds", {})
    report.calibration_slide_ids = previous.get("calibration_slide_ids", [])


def post(
    root: Path | str,
    model: str,
    *,
    params: PostParams | None = None,
    dask_address: str | None = None,
    progress: bool = True,
    run_id: str | None = None,
    force: bool = False,
) -> PostReport:
    """Post-process every scored slide of ``model`` (``name[:version]``) into ``root/tables``.

    Thresholds are fitted on ``params.calibration_split`` only and applied to every slide. Slides
    without a complete prediction or slide store, and slides whose task fails, become ``failures``
    rows (stage ``post``); the others complete. With identical parameters and unchanged inputs
    the previous run's tables are returned without recomputing (``report.reused``); ``force``
    recomputes anyway. ``dask_address`` joins a running Dask scheduler; otherwise
    ``params.execution`` decides where the tasks run.
    """
    started = time.perf_counter()
    params = params or PostParams()
    params_hash = params.output_hash()
    layout = FleetLayout(Path(root))
    registered = _resolve(layout, model)
    plan = plan_cohort(layout, registered, params)
    previous = read_post_record(layout.root, registered.model_id, params_hash)
    report = PostReport(
        run_id=run_id or new_run_id(),
        model=registered,
        params=params,
        params_hash=params_hash,
        tables={},
        record_path=record_path(layout, registered.model_id, params_hash),
    )
    timings = {"plan_s": time.perf_counter() - started}

    if not force and previous is not None and _record_is_current(layout, previous, plan.inputs):
        _reuse(layout, report, previous)
        log.info("post %s: up to date (run %s), tables read back", registered.ref, report.run_id)
    else:
        failures = list(plan.failures)
        calibration = [p for p in plan.plans if p.split == params.calibration_split]
        with open_executor(
            params.execution, n_slides=len(plan.plans), dask_address=dask_address
        ) as executor:
            report.scheduler = executor.description
            mark = time.perf_counter()
            timings["cluster_start_s"] = mark - started - timings["plan_s"]
            threshold_rows = _fit_pass(executor, calibration, params, report, failures)
            timings["fit_s"] = time.perf_counter() - mark
            mark = time.perf_counter()
            failed = {f.slide_id for f in failures}
            todo = [p for p in plan.plans if p.slide_id not in failed]
            results = _apply_pass(executor, todo, params, report, failures, progress)
            timings["slides_s"] = time.perf_counter() - mark
            mark = time.perf_counter()
        timings["cluster_stop_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        report.failures = failures
        _write_outputs(layout, report, plan, results, threshold_rows, previous)
        timings["write_s"] = time.perf_counter() - mark
        log.info(
            "post %s: %d slides, %d failures (%s)",
            registered.ref,
            report.slides.num_rows,
            len(failures),
            report.scheduler,
        )
    report.seconds = time.perf_counter() - started
    report.timings = {**timings, "total_s": report.seconds}
    return report


__all__ = [
    "PostReport",
    "PredictionMissing",
    "plan_cohort",
    "post",
    "post_is_current",
    "read_post_record",
    "stale_slides",
]
