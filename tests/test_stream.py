"""The streaming run: same results as stage after stage, calibration first, one actor pool, failures flow past.

Real Ray, real synthetic slides, a real TorchScript model; a broken slide file fails ingest.
"""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import pytest

from engine.infer.feed import SlideFeed
from engine.operate import JobConfig, score_cohort
from engine.operate.stream import split_cpus
from tests.infer_models import Darkness, darkness_card, register

_VOLATILE = {"run_id", "written_at", "engine_version"}


def _rows(table) -> list[dict]:  # noqa: ANN001 - pyarrow.Table
    """Rows without provenance; floats compared to 1e-9 (BLAS threads may order sums differently)."""
    rows = [
        {
            k: pytest.approx(v, rel=1e-9, abs=1e-12) if isinstance(v, float) else v
            for k, v in r.items()
            if k not in _VOLATILE
        }
        for r in table.to_pylist()
    ]
    return sorted(
        rows,
        key=lambda r: (
            r.get("slide_id") or "",
            str(r.get("statistic")),
            str(r.get("scope")),
            str(r.get("threshold")),
        ),
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, synth_cohort: Path, ray_session):
    work = tmp_path_factory.mktemp("stream")
    with synth_cohort.open() as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["path"] = str(synth_cohort.parent / row["path"])
        row["annotation"] = (
            str(synth_cohort.parent / row["annotation"]) if row["annotation"] else ""
        )
    broken = work / "broken.tif"
    broken.write_bytes(b"\x00" * 4096)
    rows.insert(
        0,
        {
            **{k: "" for k in rows[0]},
            "slide_id": "broken",
            "path": str(broken),
            "split": "calibration",
        },
    )
    manifest = work / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    results = {}
    for mode in ("staged", "stream"):
        root = work / mode
        root.mkdir()
        register(root, Darkness(), darkness_card("darkness", "1"))
        job = JobConfig(
            manifest=str(manifest), root=str(root), models=["darkness"], stream=mode == "stream"
        )
        results[mode] = score_cohort(config=job, progress=False)
    return results


def test_a_streamed_run_gives_the_same_tables_as_a_staged_one(runs) -> None:
    staged, streamed = runs["staged"], runs["stream"]
    assert streamed.model_ids == staged.model_ids
    for name in ("slides", "regions", "thresholds", "cohort"):
        assert _rows(streamed.tables[name]) == _rows(staged.tables[name]), name
    assert len(_rows(streamed.tables["slides"])) == 4
    geojson = list((streamed.root / "views").glob("*/*.geojson"))
    assert sorted(p.stem for p in geojson) == [f"synth_00{i}" for i in range(4)]


def test_a_failed_slide_flows_past_and_calibration_slides_go_first(runs) -> None:
    streamed = runs["stream"]
    assert [(f.stage, f.slide_id) for f in streamed.failures] == [("ingest", "broken")]
    record = json.loads(streamed.run_record.read_text())
    order = record["stages"]["stream"]["ingest_order"]
    assert order[:2] == ["broken", "synth_002"] or order[:2] == [
        "synth_002",
        "broken",
    ]  # the calibration split
    assert sorted(order) == ["broken", *[f"synth_00{i}" for i in range(4)]]


def test_the_run_record_reports_time_to_first_slide_row_and_one_actor_pool(runs) -> None:
    streamed = runs["stream"]
    record = json.loads(streamed.run_record.read_text())
    stream = record["stages"]["stream"]
    assert 0 < stream["first_prediction_s"] <= stream["first_slide_row_s"] <= stream["makespan_s"]
    infer = record["stages"]["infer:darkness:1"]
    assert len(infer["actors"]) == stream["actors_per_model"]  # started once for the whole stream
    assert sum(a["tiles"] for a in infer["actors"]) == infer["tiles"] > 0
    assert all(
        slide["stream:darkness:1"]["infer_outcome"] == "committed"
        for sid, slide in record["slides"].items()
        if sid != "broken"
    )


def test_cpus_are_split_so_ingest_and_actors_never_starve_each_other() -> None:
    assert split_cpus(2, 1, 1.0) == (1, 1, 1.0)
    assert split_cpus(2, 2, 1.0) == (1, 1, 0.5)
    assert split_cpus(16, 1, 2.0) == (8, 4, 2.0)
    with pytest.raises(Exception, match="at least 2 CPUs"):
        split_cpus(1, 1, 1.0)


def test_the_feed_blocks_a_producer_while_full_and_releases_it_when_drained() -> None:
    feed = SlideFeed(maxsize=1)
    assert feed.put("a.ome.zarr")
    second = threading.Thread(target=feed.put, args=("b.ome.zarr",))
    second.start()
    second.join(timeout=1.0)
    assert second.is_alive()  # backpressure: the producer waits for the consumer
    assert [p.name for p in feed.drain(block=False)] == ["a.ome.zarr"]
    second.join(timeout=10)
    assert not second.is_alive()
    feed.close()
    assert [p.name for p in feed.drain(block=True)] == ["b.ome.zarr"] and feed.exhausted
    feed.abandon()
    assert feed.put("c.ome.zarr") is False


def test_each_slide_is_drawn_as_post_finishes_it_and_equals_a_staged_drawing(runs) -> None:
    staged, streamed = runs["staged"], runs["stream"]
    record = json.loads(streamed.run_record.read_text())
    stream = record["stages"]["stream"]
    views = record["stages"]["views:darkness:1"]
    # Slides still queued when post is done are drawn with the cohort's views, so 1-4 here.
    assert 1 <= views["drawn_while_streaming"] <= 4
    assert views["written"] > 0 and views["failed"] == 0
    assert stream["first_slide_row_s"] <= stream["first_slide_views_s"] < stream["makespan_s"]
    (model_id,) = streamed.model_ids.values()
    drawn = sorted((streamed.root / "views" / model_id).glob("synth_*"))
    assert {p.suffix for p in drawn} >= {".png", ".geojson"} and len(drawn) >= 4 * 3
    assert {p.name for p in drawn} == {
        p.name for p in (staged.root / "views" / model_id).glob("synth_*")
    }
    for path in drawn:  # pictures, GeoJSON and galleries: the same bytes as a staged run's
        assert path.read_bytes() == (staged.root / "views" / model_id / path.name).read_bytes(), (
            path.name
        )


def test_render_views_keeps_a_streamed_drawing_only_when_posts_tables_hold_its_row(runs) -> None:
    from engine.tables import FailureRecord
    from engine.views import render_views
    from engine.views.api import StreamedViews

    streamed = runs["stream"]
    row = next(r for r in streamed.tables["slides"].to_pylist() if r["slide_id"] == "synth_001")
    marker = (FailureRecord("views", "synth_001", "Marker", "the streamed drawing"), None)
    kept = render_views(
        streamed.root, "darkness", drawn=[StreamedViews("synth_001", row, marker)], report=False
    )
    assert kept.streamed == 1 and [f.error_type for f in kept.failures] == ["Marker"]
    stale = {**row, "threshold": row["threshold"] + 0.25}  # post's tables say otherwise
    redrawn = render_views(
        streamed.root, "darkness", drawn=[StreamedViews("synth_001", stale, marker)], report=False
    )
    assert redrawn.streamed == 0 and not redrawn.failures
    assert "synth_001" in {s.slide_id for s in redrawn.slides}
