"""The failures view: the raw table is an append-only log; the view says what is still open."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.contracts import generated_contracts
from engine.ingest import ingest
from engine.tables import failures_view, read_failures
from engine.tables.schemas import FAILURES_VIEW_SCHEMA
from tests.conftest import write_plain_tiff_slide


def _slide(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    rgb = np.full((512, 512, 3), 240, np.uint8)
    rgb[96:416, 96:416] = (
        rng.integers(120, 200, size=(320, 320, 3)) * np.array([1, 0.5, 1])
    ).astype(np.uint8)
    return write_plain_tiff_slide(path, rgb, 0.5)


def test_a_failure_fixed_by_a_later_run_is_resolved_and_the_rest_stay_open(
    tmp_path: Path, ray_session
) -> None:
    late, never = tmp_path / "late.tiff", tmp_path / "never.tiff"
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        f"slide_id,path\nok,{_slide(tmp_path / 'ok.tiff', 1)}\nlate,{late}\nnever,{never}\n"
    )
    root = tmp_path / "root"
    first = ingest(manifest, root, progress=False)
    assert sorted(f.slide_id for f in first.failures) == ["late", "never"]

    _slide(late, 2)  # the lab puts the missing file in place; 'never' stays missing
    second = ingest(manifest, root, progress=False)
    assert [f.slide_id for f in second.failures] == ["never"]

    raw = read_failures(root / "tables")
    assert sorted(raw["slide_id"].to_pylist()) == ["late", "never", "never"]  # the log keeps all
    view = failures_view(root)
    assert view.schema.equals(FAILURES_VIEW_SCHEMA)
    rows = {r["slide_id"]: r for r in view.to_pylist()}
    assert set(rows) == {"late", "never"}
    assert rows["late"]["resolved"] and rows["late"]["resolved_at"] > rows["late"]["written_at"]
    assert rows["late"]["attempts"] == 1
    assert not rows["never"]["resolved"] and rows["never"]["resolved_at"] is None
    assert rows["never"]["attempts"] == 2 and rows["never"]["run_id"] == second.run_id
    assert [r["slide_id"] for r in failures_view(root, open_only=True).to_pylist()] == ["never"]


def test_the_view_schema_is_a_checked_in_contract() -> None:
    document = generated_contracts()["arrow/failures_view.json"]
    names = [f["name"] for f in document["fields"]]
    assert names[-3:] == ["attempts", "resolved", "resolved_at"]
    assert {"stage", "slide_id", "error_type", "message"} <= set(names)
