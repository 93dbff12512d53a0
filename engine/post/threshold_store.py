"""Thresholds kept with the model version, so cohorts without ground truth can be scored.

A threshold fitted on a calibration cohort is written to
``ROOT/models/<name>/<version>/thresholds.json`` (beside the model file and card: a registry
entry copied to another fleet takes its thresholds along). The file holds one entry per *fit
key*: the post parameters that decide a fit (score kind, objective, grid, positive class,
truth labels, class label values), not morphology or metrics options. The newest entry of a key
wins. Entries never change ``model_id`` (it hashes the model file and the card only).

When a cohort assigns no splits (nothing to fit on by design) post takes, in order: the stored fit for
its fit key, ``post.fallback_threshold``, the model card's ``default_threshold``. The post
record and run record say which (``threshold_source``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.post.params import PostParams
from engine.store.atomic import atomic_write_bytes

if TYPE_CHECKING:
    from engine.models import RegisteredModel

THRESHOLDS_FILE = "thresholds.json"
_FIT_FIELDS = ("score", "objective", "grid", "positive_class", "truth_labels", "class_label_values")


def fit_key(params: PostParams) -> str:
    """Hash of the post parameters a threshold fit depends on."""
    payload = {name: getattr(params, name) for name in _FIT_FIELDS}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()[
        :16
    ]


def thresholds_path(model: RegisteredModel) -> Path:
    return model.path.parent / THRESHOLDS_FILE


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        document = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    entries = document.get("entries") if isinstance(document, dict) else None
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def store_fitted_threshold(
    model: RegisteredModel,
    params: PostParams,
    *,
    threshold: float,
    fitted_thresholds: dict[str, float],
    calibration_slide_ids: list[str],
    fleet_root: Path,
    run_id: str,
) -> dict[str, Any]:
    """Record a calibration fit with the model version; returns the entry written."""
    path = thresholds_path(model)
    key = fit_key(params)
    entry = {
        "fit_key": key,
        "model_id": model.model_id,
        "threshold": threshold,
        "objective": params.objective,
        "score": params.score,
        "fitted_thresholds": fitted_thresholds,
        "calibration_split": params.calibration_split,
        "calibration_slide_ids": calibration_slide_ids,
        "fleet_root": str(fleet_root),
        "post_run_id": run_id,
        "fitted_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    entries = [e for e in _read(path) if e.get("fit_key") != key] + [entry]
    atomic_write_bytes(
        path, json.dumps({"format": 1, "entries": entries}, indent=2, sort_keys=True).encode()
    )
    return entry


def stored_threshold(model: RegisteredModel, params: PostParams) -> dict[str, Any] | None:
    """The newest fit stored for this model version and these fit parameters, or ``None``."""
    key = fit_key(params)
    matches = [
        e
        for e in _read(thresholds_path(model))
        if e.get("fit_key") == key
        and e.get("model_id") == model.model_id
        and isinstance(e.get("threshold"), (int, float))
    ]
    return matches[-1] if matches else None


def threshold_without_calibration(
    model: RegisteredModel, params: PostParams
) -> tuple[float, str, dict[str, Any]] | None:
    """(threshold, objective, source) for a cohort with nothing to fit on, or ``None``."""
    stored = stored_threshold(model, params)
    if stored is not None:
        source = {
            "kind": "stored_fit",
            "path": str(thresholds_path(model)),
            **{
                k: stored[k]
                for k in (
                    "fleet_root",
                    "post_run_id",
                    "fitted_at",
                    "calibration_split",
                    "calibration_slide_ids",
                )
                if k in stored
            },
        }
        return float(stored["threshold"]), str(stored["objective"]), source
    if params.fallback_threshold is not None:
        return params.fallback_threshold, "fixed", {"kind": "post.fallback_threshold"}
    default = getattr(model.card, "default_threshold", None)
    if default is not None and params.score == "probability":
        return float(default), "fixed", {"kind": "model_card", "card": str(model.card_path)}
    return None
