"""``slidefleet mil train`` / ``mil predict``: attention MIL over a cohort on Ray.

Train: one Ray task (one GPU when the cluster has one and ``mil.use_gpu``, else one CPU) reads
the train and calibration bags from the features stores (Zarr), trains gated-attention MIL and
keeps the epoch with the lowest calibration loss; the driver registers it as a MIL model version
with its card and ``model_id``.

Predict: Ray tasks of ``mil.slides_per_task`` slides each read their bags, run the model and
write one NGFF attention map per slide (``predictions/<mil_model_id>/<slide_id>.zarr``, aligned
with the slide on the extractor's tile grid). A slide whose map is complete for the same model,
features and score map is not recomputed: its row is read back from the map's completion
record. The driver writes ``tables/slide_predictions`` and the slide-level figures
(``tables/slide_metrics``). A slide that cannot be read becomes a failures row; the others go on.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
import zarr
from zarr.codecs import ZstdCodec

from engine import __version__
from engine.cluster import ensure_ray
from engine.errors import ConfigError, SlideFleetError
from engine.manifest import read_manifest
from engine.mil.bag_io import Bag, BagSource, load_bag
from engine.mil.model import GatedAttentionMIL, attention_entropy
from engine.mil.params import MilParams
from engine.mil.registry import MilCard, MilRegistry, RegisteredMil
from engine.mil.train import MilTrainParams, train_mil
from engine.models import ModelRegistry, RegisteredModel
from engine.runs import new_run_id
from engine.store import FleetLayout, ngff, read_completion
from engine.store.completion import write_completion
from engine.tables import FailureRecord, write_failures, write_table_part
from engine.tables.slide_level_schemas import (
    SLIDE_PREDICTIONS_SCHEMA,
    class_column,
    with_class_columns,
)

log = logging.getLogger(__name__)

STAGE = "mil"
ATTENTION_FORMAT_VERSION = 1


@dataclass(frozen=True)
class LabelledSlide:
    slide_id: str
    split: str | None
    label: str | None


@dataclass
class MilTrainReport:
    run_id: str
    model: RegisteredMil
    train_slides: int
    calibration_slides: int
    best_epoch: int
    seconds: float
    device: str
    failures: list[FailureRecord] = field(default_factory=list)


@dataclass
class MilPredictReport:
    run_id: str
    model: RegisteredMil
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[FailureRecord] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    report_path: Path | None = None


# --- resolving the cohort --------------------------------------------------------------------


def labelled_slides(manifest: Path | str) -> list[LabelledSlide]:
    """Every accepted manifest row's slide_id, split and label (rejected rows are skipped)."""
    return [LabelledSlide(e.slide_id, e.split, e.label) for e in read_manifest(manifest).entries]


@dataclass(frozen=True)
class _Models:
    features: RegisteredModel
    score: RegisteredModel | None
    score_channel: int | None


def _resolve_models(root: Path, params: MilParams) -> _Models:
    bags = params.bags
    if bags.features_model is None:
        raise ConfigError(
            "mil.bags.features_model is not set: name the embedding extractor "
            "whose features/ stores hold the tiles (e.g. demo-embedder)."
        )
    registry = ModelRegistry(root)
    features = registry.resolve(bags.features_model)
    if not features.card.is_extractor:
        raise ConfigError(
            f"mil.bags.features_model {features.ref} is a {features.card.kind}, "
            "not an embedding_extractor."
        )
    if bags.selection == "all_tissue":
        return _Models(features, None, None)
    if bags.score_model is None:
        raise ConfigError(
            "mil.bags.selection is top_k but mil.bags.score_model is not set: name the "
            "model whose score map picks the K tiles, or use selection all_tissue."
        )
    score = registry.resolve(bags.score_model)
    if score.card.is_extractor:
        raise ConfigError(f"mil.bags.score_model {score.ref} is an extractor; it has no score map.")
    if bags.score_class is None:
        channel = score.card.positive_class_index
    elif bags.score_class in score.card.class_names:
        channel = score.card.class_names.index(bags.score_class)
    else:
        raise ConfigError(
            f"mil.bags.score_class {bags.score_class!r} is not a class of "
            f"{score.ref}: {list(score.card.class_names)}"
        )
    return _Models(features, score, channel)


def _source(layout: FleetLayout, models: _Models, slide_id: str) -> BagSource:
    score_path = None
    if models.score is not None:
        score_path = str(layout.prediction_store(models.score.model_id, slide_id))
    return BagSource(
        slide_id,
        str(layout.features_store(models.features.model_id, slide_id)),
        score_path,
        models.score_channel,
    )


# --- training ----------------------------------------------------------------------------------


def _train_in_task(
    train: list[tuple[BagSource, int]],
    calibration: list[tuple[BagSource, int]],
    params_json: str,
    n_classes: int,
) -> dict[str, Any]:
    params = MilParams.model_validate_json(params_json)
    failures: list[FailureRecord] = []

    def read(items: list[tuple[BagSource, int]]) -> tuple[list[torch.Tensor], list[int]]:
        bags, labels = [], []
        for source, label in items:
            try:
                bag = load_bag(source, params.bags)
            except (SlideFleetError, ValueError, OSError) as exc:
                failures.append(
                    FailureRecord.from_exception(
                        STAGE, source.slide_id, exc, source_path=source.features_path
                    )
                )
                continue
            bags.append(torch.from_numpy(bag.embeddings))
            labels.append(label)
        return bags, labels

    train_bags, train_labels = read(train)
    calibration_bags, calibration_labels = read(calibration)
    if len(set(train_labels)) < 2:
        raise ConfigError(
            f"the train split has {len(train_labels)} readable labelled slides of "
            f"{len(set(train_labels))} class(es); MIL needs both classes to learn."
        )
    device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    started = time.perf_counter()
    result = train_mil(
        train_bags,
        train_labels,
        n_classes=n_classes,
        calibration_bags=calibration_bags,
        calibration_labels=calibration_labels,
        params=MilTrainParams(
            epochs=params.epochs,
            learning_rate=params.learning_rate,
            weight_decay=params.weight_decay,
            hidden_dim=params.hidden_dim,
            attention_dim=params.attention_dim,
            dropout=params.dropout,
            seed=params.seed,
        ),
        device=device,
    )
    buffer = io.BytesIO()
    torch.save(result.model.state_dict(), buffer)
    return {
        "state": buffer.getvalue(),
        "embedding_dim": int(train_bags[0].shape[1]),
        "best_epoch": result.best_epoch,
        "train_loss": result.train_loss,
        "calibration_loss": result.calibration_loss,
        "failures": failures,
        "device": device,
        "seconds": time.perf_counter() - started,
        "train_slides": len(train_bags),
        "calibration_slides": len(calibration_bags),
    }


def train_mil_model(
    root: Path | str,
    manifest: Path | str,
    params: MilParams,
    *,
    address: str | None = None,
    run_id: str | None = None,
) -> MilTrainReport:
    """Train on the manifest's train split (labels), select on calibration, register the model."""
    started = time.perf_counter()
    layout = FleetLayout(Path(root))
    run_id = run_id or new_run_id()
    models = _resolve_models(layout.root, params)
    slides = labelled_slides(manifest)
    labelled = [s for s in slides if s.label]
    classes = list(params.classes or sorted({s.label for s in labelled if s.split == "train"}))
    if len(classes) < 2:
        raise ConfigError(
            f"MIL needs at least two slide labels in the train split; found {classes}. "
            "Fill the manifest's label column (e.g. tumor / normal)."
        )
    unknown = sorted({s.label for s in labelled} - set(classes))
    if unknown:
        raise ConfigError(f"labels {unknown} are not in mil.classes {classes}")
    positive = params.positive_class or classes[-1]
    if positive not in classes:
        raise ConfigError(f"mil.positive_class {positive!r} is not one of {classes}")

    def items(split: str) -> list[tuple[BagSource, int]]:
        return [
            (_source(layout, models, s.slide_id), classes.index(s.label or ""))
            for s in labelled
            if s.split == split
        ]

    train, calibration = items("train"), items("calibration")
    ensure_ray(address)
    gpus = ray.cluster_resources().get("GPU", 0.0)
    options: dict[str, Any] = {
        "num_cpus": 1,
        "num_gpus": 1 if params.use_gpu and gpus >= 1 else 0,
        "runtime_env": {"env_vars": {"OMP_NUM_THREADS": "1"}},
    }
    out = ray.get(
        ray.remote(_train_in_task)
        .options(**options)
        .remote(train, calibration, params.model_dump_json(), len(classes))
    )
    model = GatedAttentionMIL(
        out["embedding_dim"],
        len(classes),
        hidden_dim=params.hidden_dim,
        attention_dim=params.attention_dim,
        dropout=params.dropout,
    )
    model.load_state_dict(torch.load(io.BytesIO(out["state"]), weights_only=True))
    model.eval()
    registry = MilRegistry(layout.root)
    card = MilCard(
        name=params.name,
        version=params.version or registry.next_version(params.name),
        class_names=tuple(classes),
        positive_class=positive,
        embedding_dim=out["embedding_dim"],
        features_model=models.features.ref,
        features_model_id=models.features.model_id,
        score_model_id=models.score.model_id if models.score else None,
        bags=params.bags,
        training={
            **params.model_dump(
                mode="json",
                include={
                    "epochs",
                    "learning_rate",
                    "weight_decay",
                    "hidden_dim",
                    "attention_dim",
                    "dropout",
                    "seed",
                },
            ),
            "best_epoch": out["best_epoch"],
            "train_slides": out["train_slides"],
            "calibration_slides": out["calibration_slides"],
            "calibration_loss": (
                out["calibration_loss"][out["best_epoch"]] if out["calibration_loss"] else None
            ),
            "final_train_loss": out["train_loss"][-1],
        },
        description=f"Gated-attention MIL (Ilse et al. 2018) over {params.bags.selection} bags of "
        f"{models.features.ref} embeddings; predicts {classes}.",
        training_data=f"{out['train_slides']} train-split slides of {Path(manifest).name} "
        f"(labels from its label column); epoch chosen on {out['calibration_slides']} "
        "calibration-split slides.",
    )
    registered = registry.add(model, card)
    write_failures(layout.tables_dir, out["failures"], run_id=run_id)
    return MilTrainReport(
        run_id,
        registered,
        out["train_slides"],
        out["calibration_slides"],
        out["best_epoch"],
        time.perf_counter() - started,
        out["device"],
        out["failures"],
    )


# --- prediction --------------------------------------------------------------------------------


def _prediction_key(mil: RegisteredMil, source: BagSource) -> dict[str, Any]:
    score = read_completion(Path(source.score_path)) if source.score_path else None
    features = read_completion(Path(source.features_path))
    return {
        "mil_model_id": mil.model_id,
        "features_key": (features or {}).get("input_key"),
        "score_key": (score or {}).get("input_key"),
        "format": ATTENTION_FORMAT_VERSION,
    }


def _write_attention_map(
    path: Path, key: dict[str, Any], bag: Bag, attention: np.ndarray, row: dict[str, Any]
) -> None:
    """One-level NGFF map of attention on the extractor's tile grid, committed atomically."""
    attrs = bag.features_attributes
    n_rows, n_cols = (int(v) for v in attrs["grid_shape"])
    tile_y, tile_x = (float(v) for v in attrs["tile_level0_px"])
    mpp_y, mpp_x = (float(v) for v in attrs["slide_mpp"])
    grid = np.full((1, n_rows, n_cols), np.nan, np.float32)
    grid[0, bag.grid[:, 0], bag.grid[:, 1]] = attention
    partial = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
    group = zarr.open_group(partial, mode="w", zarr_format=3)
    array = group.create_array(
        "0",
        shape=grid.shape,
        chunks=(1, min(n_rows, 1024), min(n_cols, 1024)),
        dtype="float32",
        fill_value=float("nan"),
        compressors=[ZstdCodec(level=1)],
        dimension_names=("c", "y", "x"),
    )
    array[...] = grid
    level = ngff.level_scale("0", mpp_y, mpp_x, tile_y, tile_x)
    group.attrs["ome"] = ngff.score_map_attributes(bag.slide_id, [level], ["attention"])
    group.attrs["slidefleet"] = {
        "slide_id": bag.slide_id,
        "model_id": key["mil_model_id"],
        "kind": "mil_attention",
        "class_names": ["attention"],
        "output_px_um": tile_x * mpp_x,
        "engine_version": __version__,
    }
    write_completion(partial, {"input_key": key, "result": row})
    path.parent.mkdir(parents=True, exist_ok=True)
    trash = path.parent / f".{path.name}.trash-{uuid.uuid4().hex[:8]}"
    if path.exists():
        os.replace(path, trash)
    os.replace(partial, path)
    shutil.rmtree(trash, ignore_errors=True)


def _predict_in_task(
    items: list[tuple[BagSource, str | None, str | None]],
    mil_path: str,
    card_json: str,
    mil_model_id: str,
    predictions_dir: str,
    top_tiles: int,
) -> tuple[list[dict[str, Any]], list[str], list[FailureRecord]]:
    torch.set_num_threads(1)
    card = MilCard.model_validate_json(card_json)
    mil = RegisteredMil(card, mil_model_id, Path(mil_path))
    module = mil.load().eval()
    rows, skipped, failures = [], [], []
    for source, split, label in items:
        path = Path(predictions_dir) / f"{source.slide_id}.zarr"
        try:
            key = _prediction_key(mil, source)
            record = read_completion(path)
            if record is not None and record.get("input_key") == key:
                rows.append({**record["result"], "split": split, "true_label": label})
                skipped.append(source.slide_id)
                continue
            bag = load_bag(source, card.bags)
            with torch.inference_mode():
                logits, attention = module(torch.from_numpy(bag.embeddings))
            probabilities = torch.softmax(logits, dim=0).numpy()
            weights = attention.numpy().astype(np.float32)
            order = np.argsort(-weights, kind="stable")[:top_tiles]
            row = {
                "slide_id": source.slide_id,
                "model_id": mil_model_id,
                "split": split,
                "true_label": label,
                "predicted_class": card.class_names[int(np.argmax(probabilities))],
                "score": float(probabilities[card.class_names.index(card.positive_class)]),
                "attention_entropy": attention_entropy(attention),
                "bag_tiles": int(len(weights)),
                "top_tiles": [
                    {
                        "x": int(bag.coords[i, 0]),
                        "y": int(bag.coords[i, 1]),
                        "width": int(bag.coords[i, 2]),
                        "height": int(bag.coords[i, 3]),
                        "attention": float(weights[i]),
                    }
                    for i in order
                ],
                "attention_map": str(path),
                **{
                    class_column(c): float(p)
                    for c, p in zip(card.class_names, probabilities, strict=True)
                },
            }
            _write_attention_map(path, key, bag, weights, row)
            rows.append(row)
        except (SlideFleetError, ValueError, OSError, KeyError) as exc:
            failures.append(
                FailureRecord.from_exception(
                    STAGE,
                    source.slide_id,
                    exc,
                    source_path=source.features_path,
                    model_id=mil_model_id,
                )
            )
    return rows, skipped, failures


def predict_mil_model(
    root: Path | str,
    model: str,
    manifest: Path | str,
    params: MilParams | None = None,
    *,
    splits: Sequence[str] | None = None,
    address: str | None = None,
    run_id: str | None = None,
) -> MilPredictReport:
    """Predict every manifest slide (or those of ``splits``); write tables and attention maps."""
    from engine.mil.evaluate import slide_metric_rows

    started = time.perf_counter()
    params = params or MilParams()
    layout = FleetLayout(Path(root))
    mil = MilRegistry(layout.root).resolve(model)
    report = MilPredictReport(run_id or new_run_id(), mil)
    registry = ModelRegistry(layout.root)
    features = registry.resolve(mil.card.features_model)
    if features.model_id != mil.card.features_model_id:
        raise ConfigError(
            f"{mil.ref} was trained on features of model_id {mil.card.features_model_id}, "
            f"but {mil.card.features_model} now resolves to {features.model_id}; "
            f"name the version it was trained with."
        )
    score = None
    channel = None
    if mil.card.score_model_id is not None:
        score = next((m for m in registry.list() if m.model_id == mil.card.score_model_id), None)
        if score is None:
            raise ConfigError(
                f"{mil.ref} picks tiles with model_id {mil.card.score_model_id}, "
                "which is not registered under this root."
            )
        bags = mil.card.bags
        channel = (
            score.card.class_names.index(bags.score_class)
            if bags.score_class
            else score.card.positive_class_index
        )
    models = _Models(features, score, channel)
    slides = [s for s in labelled_slides(manifest) if splits is None or s.split in splits]
    items = [(_source(layout, models, s.slide_id), s.split, s.label) for s in slides]
    out_dir = layout.predictions_dir / mil.model_id
    out_dir.mkdir(parents=True, exist_ok=True)
    ensure_ray(address)
    task = ray.remote(_predict_in_task).options(num_cpus=1)
    refs = [
        task.remote(
            items[i : i + params.slides_per_task],
            str(mil.path),
            mil.card.model_dump_json(),
            mil.model_id,
            str(out_dir),
            params.top_tiles,
        )
        for i in range(0, len(items), params.slides_per_task)
    ]
    for rows, skipped, failures in ray.get(refs):
        report.rows.extend(rows)
        report.skipped.extend(skipped)
        report.failures.extend(failures)
    report.rows.sort(key=lambda r: r["slide_id"])
    schema = with_class_columns(SLIDE_PREDICTIONS_SCHEMA, mil.card.class_names)
    write_table_part(
        layout.tables_dir,
        "slide_predictions",
        report.rows,
        schema=schema,
        partition={"model_id": mil.model_id},
        run_id=report.run_id,
    )
    report.metrics = slide_metric_rows(
        "mil",
        mil.model_id,
        report.rows,
        list(mil.card.class_names),
        mil.card.positive_class,
        resamples=params.bootstrap_resamples,
        seed=params.seed,
    )
    write_table_part(
        layout.tables_dir,
        "slide_metrics",
        report.metrics,
        partition={"model_id": mil.model_id},
        run_id=report.run_id,
    )
    write_failures(layout.tables_dir, report.failures, run_id=report.run_id)
    from engine.views.slide_level_report import write_slide_level_report

    report.report_path = write_slide_level_report(
        layout.root, mil.model_id, f"SlideFleet MIL: {mil.ref}"
    )
    report.seconds = time.perf_counter() - started
    return report
