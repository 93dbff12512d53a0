"""Scoring slides without ground truth: a stored calibration fit or the card's default threshold.

Real Ray, real synthetic slides (two, with their annotations and splits removed), a real model.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from engine.operate import score_cohort
from tests.infer_models import Darkness, darkness_card, register


def _unlabelled_manifest(synth_cohort: Path, out: Path, n: int = 2) -> Path:
    with synth_cohort.open() as handle:
        rows = list(csv.DictReader(handle))[:n]
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "new-slides.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["slide_id", "path"])
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    "slide_id": f"new_{row['slide_id']}",
                    "path": str(synth_cohort.parent / row["path"]),
                }
            )
    return manifest


def _geojson_features(root: Path, model_id: str, slide_id: str) -> int:
    path = root / "views" / model_id / f"{slide_id}.geojson"
    return len(json.loads(path.read_text())["features"])


def test_an_unlabelled_cohort_uses_the_model_cards_default_threshold(
    tmp_path: Path, synth_cohort: Path, ray_session
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    card = darkness_card("darkness", "1").model_copy(update={"default_threshold": 0.2})
    registered = register(root, Darkness(), card)
    manifest = _unlabelled_manifest(synth_cohort, tmp_path)
    result = score_cohort(manifest, "darkness", root=root, progress=False)
    assert result.failures == [], result.failures
    post = result.stages["post:darkness:1"]
    assert (
        post["threshold"] == pytest.approx(0.2) and post["threshold_source"]["kind"] == "model_card"
    )
    slides = result.tables["slides"].to_pylist()
    assert sorted(r["slide_id"] for r in slides) == ["new_synth_000", "new_synth_001"]
    assert all(r["threshold"] == pytest.approx(0.2) for r in slides)
    for row in slides:
        assert (root / "views" / registered.model_id / f"{row['slide_id']}.geojson").exists()


def test_a_threshold_fitted_on_a_calibration_cohort_is_reused_for_a_later_unlabelled_one(
    tmp_path: Path, synth_cohort: Path, ray_session
) -> None:
    calibration_root = tmp_path / "calibration"
    calibration_root.mkdir()
    registered = register(calibration_root, Darkness(), darkness_card("darkness", "1"))
    calibrated = score_cohort(synth_cohort, "darkness", root=calibration_root, progress=False)
    fitted = calibrated.stages["post:darkness:1"]["threshold"]
    assert (
        fitted is not None
        and calibrated.stages["post:darkness:1"]["threshold_source"]["kind"] == "calibration_fit"
    )
    stored = json.loads(
        (calibration_root / "models" / "darkness" / "1" / "thresholds.json").read_text()
    )
    assert [e["threshold"] for e in stored["entries"]] == [fitted]

    # A new fleet for new slides, with the registry entry (model, card, thresholds) copied over.
    root = tmp_path / "nightly"
    shutil.copytree(calibration_root / "models", root / "models")
    manifest = _unlabelled_manifest(synth_cohort, tmp_path / "incoming")
    result = score_cohort(manifest, "darkness", root=root, progress=False)
    assert result.model_ids["darkness:1"] == registered.model_id
    assert result.failures == [], result.failures
    post = result.stages["post:darkness:1"]
    assert post["threshold"] == fitted
    source = post["threshold_source"]
    assert source["kind"] == "stored_fit" and source["fleet_root"] == str(
        calibration_root.resolve()
    )
    assert source["calibration_slide_ids"] == ["synth_002"]
    slides = result.tables["slides"].to_pylist()
    assert all(r["threshold"] == fitted for r in slides)
    record = json.loads(
        next((root / "tables" / "_post" / registered.model_id).glob("*.json")).read_text()
    )
    assert record["threshold_source"]["kind"] == "stored_fit"
    for row in slides:  # outlines drawn at the reused threshold
        assert _geojson_features(root, registered.model_id, row["slide_id"]) == row["n_regions"]
