"""MIL over a cohort on real Ray: bags from features stores, train, register, predict, tables."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pytest
import torch
import zarr

from engine.cli import main
from engine.features import read_features
from engine.infer import infer
from engine.ingest import ingest
from engine.mil.bag_io import load_bag
from engine.mil.params import BagParams, MilParams
from engine.mil.registry import MilRegistry
from engine.mil.stage import predict_mil_model, train_mil_model
from engine.models import ModelCard, ModelRegistry
from engine.store import read_completion
from engine.tables.writer import read_table
from tests.infer_models import Darkness, DarkPatch, darkness_card
from tests.infer_models import register as register_scripted


class ColourStats(torch.nn.Module):
    """Six features per tile: each channel's mean and standard deviation (no weights)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], 1)


def _extractor_card() -> ModelCard:
    return ModelCard.model_validate(
        {
            "name": "colour-stats",
            "version": "1",
            "kind": "embedding_extractor",
            "embedding_dim": 6,
            "tile_size_px": 64,
            "mpp": 2.0,
            "output_stride": 64,
            "output_activation": "none",
            "normalisation": {"input_scale": "0-1"},
            "description": "Test extractor.",
            "training_data": "none: fixed arithmetic for tests",
        }
    )


@pytest.fixture(scope="module")
def cohort(
    tmp_path_factory: pytest.TempPathFactory, synth_cohort: Path, ray_session
) -> tuple[Path, Path]:
    """Ingested slides, their features and a darkness map; a manifest with both classes in train."""
    root = tmp_path_factory.mktemp("mil") / "root"
    assert not ingest(synth_cohort, root, progress=False).failures
    register_scripted(root, ColourStats(), _extractor_card())
    register_scripted(root, Darkness(), darkness_card("darkness"))
    assert not infer(root, "colour-stats", progress=False).failures
    assert not infer(root, "darkness", progress=False).failures
    with synth_cohort.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_label = sorted(rows, key=lambda r: (r["label"] != "tumor", r["slide_id"]))
    labels = {r["label"] for r in rows}
    assert labels == {"normal", "tumor"}, "the synthetic cohort carries both slide labels"
    # train: one of each class first; the rest calibration then test.
    first_normal = next(r for r in by_label if r["label"] == "normal")
    first_tumour = by_label[0]
    rest = [r for r in rows if r not in (first_normal, first_tumour)]
    for r in rows:
        r["split"] = "train" if r in (first_normal, first_tumour) else "calibration"
    rest[-1]["split"] = "test"
    manifest = synth_cohort.parent / "manifest-mil.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root, manifest


def _params(**bags: object) -> MilParams:
    return MilParams(
        bags=BagParams(features_model="colour-stats", score_model="darkness", k=5, **bags), epochs=5
    )


def test_top_k_bags_are_the_tiles_the_map_scores_highest(cohort: tuple[Path, Path]) -> None:
    root, _ = cohort
    registry = ModelRegistry(root)
    extractor, scorer = registry.resolve("colour-stats"), registry.resolve("darkness")
    from engine.mil.bag_io import BagSource

    features_path = root / "features" / extractor.model_id / "synth_000.zarr"
    score_path = root / "predictions" / scorer.model_id / "synth_000.zarr"
    source = BagSource("synth_000", str(features_path), str(score_path), 0)
    bag = load_bag(source, _params().bags)
    everything = load_bag(source, _params(selection="all_tissue").bags)
    features = read_features(features_path)
    assert bag.embeddings.shape == (5, 6) and everything.embeddings.shape[0] > 5
    assert everything.embeddings.shape[0] == int((features.tissue_fraction >= 0.25).sum())
    # Independently: the darkness map's max over each tile's box (8 µm map pixels = 16 level-0 px).
    darkness = np.asarray(zarr.open_group(score_path, mode="r")["0"][0])
    eligible = np.flatnonzero(features.tissue_fraction >= 0.25)
    best = []
    for i in eligible:
        x, y, w, h = features.coords[i]
        best.append(np.nanmax(darkness[y // 16 : (y + h + 15) // 16, x // 16 : (x + w + 15) // 16]))
    top = set(eligible[np.argsort(-np.array(best), kind="stable")[:5]].tolist())
    chosen = {int(np.flatnonzero((features.coords == c).all(axis=1))[0]) for c in bag.coords}
    assert chosen == top


def test_train_registers_and_predict_writes_tables_and_attention_maps(
    cohort: tuple[Path, Path],
) -> None:
    root, manifest = cohort
    trained = train_mil_model(root, manifest, _params())
    card = trained.model.card
    assert card.class_names == ("normal", "tumor") and card.positive_class == "tumor"
    assert (trained.train_slides, trained.calibration_slides) == (2, 1)
    assert card.features_model_id == ModelRegistry(root).resolve("colour-stats").model_id
    assert 0 <= trained.best_epoch < 5
    assert MilRegistry(root).resolve("mil").model_id == trained.model.model_id

    report = predict_mil_model(root, "mil", manifest, _params())
    assert not report.failures and len(report.rows) == 4
    table = read_table(root / "tables", "slide_predictions").to_pylist()  # the engine's reader
    assert {r["slide_id"] for r in table} == {r["slide_id"] for r in report.rows}
    for row in table:
        probs = np.array([row["prob_normal"], row["prob_tumor"]])
        assert probs.sum() == pytest.approx(1, abs=1e-5)
        assert row["predicted_class"] == ("normal", "tumor")[int(np.argmax(probs))]
        assert row["score"] == pytest.approx(row["prob_tumor"])
        assert row["bag_tiles"] == 5 and 0 <= row["attention_entropy"] <= 1
        attention_store = zarr.open_group(row["attention_map"], mode="r")
        attention = np.asarray(attention_store["0"][0])
        assert np.isfinite(attention).sum() == 5
        assert np.nansum(attention) == pytest.approx(1, abs=1e-5)
        scale = attention_store.attrs["ome"]["multiscales"][0]["datasets"][0][
            "coordinateTransformations"
        ][0]
        assert scale["scale"][1:] == pytest.approx(
            [128.0, 128.0]
        )  # one pixel per 64 px tile at 2 µm
        top = row["top_tiles"][0]
        r, c = top["y"] // 256, top["x"] // 256
        assert attention[r, c] == pytest.approx(top["attention"]) and attention[r, c] == np.nanmax(
            attention
        )
    metrics = {(m["split"], m["statistic"]) for m in report.metrics}
    assert {("all", "auc"), ("all", "accuracy"), ("all", "quadratic_weighted_kappa")} <= metrics
    confusion = sum(
        m["value"] for m in report.metrics if m["split"] == "all" and m["statistic"] == "confusion"
    )
    assert confusion == 4

    again = predict_mil_model(root, "mil", manifest, _params())
    assert sorted(again.skipped) == sorted(r["slide_id"] for r in report.rows)
    assert [r["score"] for r in again.rows] == [r["score"] for r in report.rows]
    assert (
        read_completion(Path(report.rows[0]["attention_map"]))["input_key"]["mil_model_id"]
        == trained.model.model_id
    )


def test_cli_trains_a_new_version_and_predicts_the_test_split(
    cohort: tuple[Path, Path], capsys
) -> None:
    root, manifest = cohort
    common = ["--root", str(root), "--manifest", str(manifest)]
    bags = ["--features-model", "colour-stats", "--selection", "all_tissue"]
    assert main(["mil", "train", *common, *bags, "--epochs", "3", "--name", "mil-all"]) == 0
    assert "registered mil-all:1" in capsys.readouterr().out
    # Predict builds bags as the model was trained (its card), so it takes no bag flags.
    assert main(["mil", "predict", *common, "--model", "mil-all", "--splits", "test"]) == 0
    out = capsys.readouterr().out
    assert "on 1 slides" in out


def test_mil_report_shows_figures_and_top_attention_tiles(cohort: tuple[Path, Path]) -> None:
    root, manifest = cohort
    train_mil_model(root, manifest, _params())
    report = predict_mil_model(root, "mil", manifest, _params())
    page = report.report_path.read_text()
    assert "Slide-level figures" in page and "Confusion" in page
    assert page.count('<img class="tile"') == 4 * 4  # four slides, mil.top_tiles = 4 each


def test_evaluate_maps_gives_slide_auc_and_a_consistent_froc(cohort: tuple[Path, Path]) -> None:
    from sklearn.metrics import roc_auc_score

    from engine.evaluate.maps import evaluate_maps
    from engine.evaluate.params import MapEvalParams

    root, manifest = cohort
    params = MapEvalParams(
        detection_threshold=0.3, froc_mode="all_detections", bootstrap_resamples=200
    )
    report = evaluate_maps(root, "darkness", manifest, params)
    assert not report.failures and len(report.slide_rows) == 4
    labels = [r["true_label"] == "tumor" for r in report.slide_rows]
    scores = [r["score"] for r in report.slide_rows]
    auc = next(m for m in report.metrics if (m["split"], m["statistic"]) == ("all", "auc"))
    assert auc["value"] == pytest.approx(roc_auc_score(labels, scores))
    assert auc["resamples"] > 0
    darkness_id = ModelRegistry(root).resolve("darkness").model_id
    for row in report.slide_rows:
        whole = np.asarray(
            zarr.open_group(
                root / "predictions" / darkness_id / f"{row['slide_id']}.zarr", mode="r"
            )["0"][0]
        )
        assert row["score"] <= np.nanmax(whole) + 1e-6
    assert all(d["confidence"] >= 0.3 for d in report.lesion_rows)
    if report.froc is None:
        assert report.froc_note
        return
    tp = sum(d["outcome"] == "tp" for d in report.lesion_rows)
    fp = sum(d["outcome"] == "fp" for d in report.lesion_rows)
    assert report.froc.sensitivity[-1] == pytest.approx(tp / report.froc.lesion_count)
    assert report.froc.fp_per_slide[-1] == pytest.approx(fp / report.froc.slide_count)
    assert "Lesion FROC" in report.report_path.read_text()
    froc_table = pads.dataset(root / "tables" / "froc", partitioning="hive").to_table().to_pylist()
    assert {r["kind"] for r in froc_table} == {"curve", "at_rate"}


def test_tiles_table_and_geojson_for_a_patch_classifier_and_an_extractor(
    cohort: tuple[Path, Path], synth_cohort: Path
) -> None:
    import json

    from engine.slides import open_slide
    from engine.tiles.stage import write_tiles

    root, _ = cohort
    card = ModelCard.model_validate(
        {
            "name": "dark-patch",
            "version": "1",
            "kind": "patch_classifier",
            "class_names": ["light", "dark"],
            "tile_size_px": 64,
            "mpp": 2.0,
            "output_stride": 64,
            "output_activation": "none",
            "normalisation": {"input_scale": "0-1"},
            "description": "Test classifier.",
            "training_data": "none: fixed arithmetic for tests",
        }
    )
    model = register_scripted(root, DarkPatch(), card)
    assert not infer(root, "dark-patch", progress=False).failures
    report = write_tiles(root, "dark-patch")
    assert not report.failures and len(report.slides) == 4
    table = read_table(root / "tables", "tiles").filter(
        pc.field("model_id") == model.model_id
    )  # the engine's reader: the prob_<class> columns come back with it
    assert {"prob_light", "prob_dark", "x", "y", "width", "height", "tissue_fraction"} <= set(
        table.column_names
    )
    rows = [r for r in table.to_pylist() if r["slide_id"] == "synth_001"]
    assert rows
    with open_slide(synth_cohort.parent / "slides" / "synth_001.tif") as slide:
        for row in rows[:: max(1, len(rows) // 5)]:
            assert row["prob_light"] + row["prob_dark"] == pytest.approx(1, abs=1e-5)
            if row["width"] == row["height"] == 256:
                region = slide.read_region_rgb(row["x"], row["y"], 0, 256, 256)
                assert row["prob_dark"] == pytest.approx(1 - region.mean() / 255, abs=0.01)
    collection = json.loads(
        (root / "views" / model.model_id / "synth_001.tiles.geojson").read_text()
    )
    assert len(collection["features"]) == len(rows)
    feature = collection["features"][0]
    assert feature["properties"]["objectType"] == "detection"
    assert set(feature["properties"]["measurements"]) == {
        "prob_light",
        "prob_dark",
        "tissue_fraction",
    }
    extractor = ModelRegistry(root).resolve("colour-stats")
    assert write_tiles(root, "colour-stats").tiles == sum(
        read_features(root / "features" / extractor.model_id / f"{s}.zarr").embeddings.shape[0]
        for s in ("synth_000", "synth_001", "synth_002", "synth_003")
    )
