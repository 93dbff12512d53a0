"""Which slides ``post`` can run on, the ones it cannot (as failures), and the key of its inputs.

Read from completion records only (cheap): no score map or label is opened on the driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import SlideFleetError, StoreIncomplete
from engine.keys import content_hash
from engine.post.params import PostParams
from engine.post.slide_task import STAGE, SlidePlan
from engine.qc.gate import excluded_slides
from engine.store import FleetLayout, read_completion
from engine.tables import FailureRecord

if TYPE_CHECKING:
    from engine.models import RegisteredModel


class PredictionMissing(StoreIncomplete):
    """The slide has no complete prediction for this model: run ``slidefleet infer`` first."""


@dataclass(frozen=True)
class CohortPlan:
    """The slides post can run on, the ones it cannot (as failures), and the inputs' key."""

    plans: list[SlidePlan]
    failures: list[FailureRecord]
    inputs: dict[str, str]
    """slide_id -> digest of its prediction and slide-store keys, split and label (or why missing)."""


def _digest(payload: Any) -> str:
    return content_hash(payload)


def resolve_model(layout: FleetLayout, model: str) -> RegisteredModel:
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
    # Slides the latest QC gates out (qc.exclude) are not part of the cohort: their QC failures
    # row says why, and an older prediction of theirs must not count.
    gated = set(excluded_slides(layout.tables_dir))
    slide_ids = sorted(
        (
            set(_store_names(layout.slides_dir, ".ome.zarr"))
            | set(_store_names(prediction_dir, ".zarr"))
        )
        - gated
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


def task_key(kind: str, model_id: str, params_hash: str, run_id: str, slide_id: str) -> str:
    """Dask key of one slide's task; unique per run: two runs sharing a scheduler never share one."""
    return f"post-{kind}-{model_id}-{params_hash}-{run_id}-{slide_id}"


__all__ = ["CohortPlan", "PredictionMissing", "plan_cohort", "resolve_model", "task_key"]
