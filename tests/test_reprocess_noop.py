"""A nightly reprocess of an unchanged fleet with failed slides is a no-op, and the books stay right.

Real Ray, real synthetic slides, a real broken file (fails ingest) and a real model that returns
NaN (fails infer on every slide).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.operate import JobConfig, plan_reprocess, reprocess, score_cohort
from engine.tables import read_table
from tests.infer_models import Darkness, NanOnDarkTiles, darkness_card, register


def _failure_rows(root: Path) -> int:
    return read_table(root / "tables", "failures").num_rows


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, synth_cohort: Path, ray_session):
    """A fleet run from another folder with a relative manifest path, one broken slide file."""
    work = tmp_path_factory.mktemp("noop")
    source = synth_cohort.parent
    with synth_cohort.open() as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["path"] = str(source / row["path"])
        row["annotation"] = str(source / row["annotation"]) if row["annotation"] else ""
    broken = work / "broken.tif"
    broken.write_bytes(b"this is not a slide, a scanner wrote half a file")
    rows.append(
        {**{k: "" for k in rows[0]}, "slide_id": "broken", "path": str(broken), "split": "test"}
    )
    manifest = work / "cohort" / "manifest.csv"
    manifest.parent.mkdir()
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    root = work / "root"
    root.mkdir()
    register(root, Darkness(), darkness_card("darkness", "1"))
    register(root, NanOnDarkTiles(-1.0), darkness_card("nan", "1"), check_output=False)
    cwd = Path.cwd()
    os.chdir(work)
    try:
        first = score_cohort("cohort/manifest.csv", ["darkness"], root="root", progress=False)
    finally:
        os.chdir(cwd)
    # A second run of another model on the same root: the fleet must remember both.
    second = score_cohort(manifest, ["nan"], root=root, progress=False)
    return root, manifest, broken, first, second


def test_fleet_json_has_absolute_paths_and_every_model_run(fleet) -> None:
    root, manifest, _, first, second = fleet
    stored = JobConfig.model_validate_json((root / "fleet.json").read_text())
    assert stored.manifest == str(manifest.resolve()) and Path(stored.root).is_absolute()
    assert stored.models == ["darkness", "nan"]
    assert {f.slide_id for f in first.failures if f.stage == "ingest"} == {"broken"}
    # The second run did not try the broken slide again: it failed on the same bytes.
    assert "broken" in second.known_failures["ingest"]
    assert not [f for f in second.failures if f.stage == "ingest"]
    assert {f.slide_id for f in second.failures if f.stage == "infer"} == {
        f"synth_00{i}" for i in range(4)
    }


def test_reprocess_of_an_unchanged_fleet_with_failures_is_a_no_op(fleet) -> None:
    root, *_ = fleet
    rows_before = _failure_rows(root)
    runs_before = sorted(p.name for p in (root / "runs").iterdir())
    plan = plan_reprocess(root)
    assert plan.is_empty, plan.describe()
    assert set(plan.not_retried["ingest"]) == {"broken"}
    assert set(plan.not_retried["infer:nan:1"]) == {f"synth_00{i}" for i in range(4)}
    assert "not retried" in plan.describe()
    # From cron: another working directory, the absolute root, the job entrypoint.
    output = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).parents[1] / "jobs" / "reprocess.py"),
            "--root",
            str(root),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd="/",
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert output.returncode == 0, output.stderr
    assert "nothing stale" in output.stdout
    assert _failure_rows(root) == rows_before
    assert sorted(p.name for p in (root / "runs").iterdir()) == runs_before


def test_retry_failed_plans_the_failed_slides_again(fleet) -> None:
    root, *_ = fleet
    job = JobConfig.model_validate_json((root / "fleet.json").read_text()).model_copy(
        update={"retry_failed": True}
    )
    plan = plan_reprocess(root, job)
    assert set(plan.ingest) == {"broken"}
    assert set(plan.infer["nan"]) >= {f"synth_00{i}" for i in range(4)}
    assert not plan.not_retried


def test_bookkeeping_tables_hold_current_rows(fleet) -> None:
    root, manifest, *_ = fleet
    # A third full run: nothing converts, nothing new commits, views are up to date.
    third = score_cohort(manifest, ["darkness"], root=root, progress=False)
    assert third.stages["ingest"]["converted"] == 0
    assert third.stages["views:darkness:1"].get("up_to_date") is True
    ingested = read_table(root / "tables", "ingested").to_pylist()
    assert sorted(r["slide_id"] for r in ingested) == [f"synth_00{i}" for i in range(4)]
    model_id = third.model_ids["darkness:1"]
    inferred = [
        r for r in read_table(root / "tables", "inferred").to_pylist() if r["model_id"] == model_id
    ]
    assert sorted(r["slide_id"] for r in inferred) == [f"synth_00{i}" for i in range(4)]
    assert {r["run_id"] for r in inferred} == {fleet[3].run_id}


def test_a_killed_infer_run_keeps_the_rows_of_what_it_committed(fleet, tmp_path: Path) -> None:
    import ray

    from engine.infer import infer
    from engine.store import read_completion

    root, *_ = fleet
    v2 = register(
        root, Darkness(), darkness_card("darkness", "2").model_copy(update={"description": "v2"})
    )
    started: list = []

    def kill_after_first_commit(stats, actors) -> None:  # noqa: ANN001
        started[:] = actors
        committed = [
            p
            for p in (root / "predictions" / v2.model_id).glob("*.zarr")
            if not p.name.startswith(".")
        ]
        if committed:
            raise KeyboardInterrupt("the run is killed")

    with pytest.raises(KeyboardInterrupt):
        infer(
            root,
            "darkness:2",
            progress=False,
            run_id="killed-run",
            on_unit_done=kill_after_first_commit,
        )
    for actor in started:
        ray.kill(actor)
    committed = [
        p for p in (root / "predictions" / v2.model_id).glob("*.zarr") if not p.name.startswith(".")
    ]
    assert committed and all(read_completion(p)["run_id"] == "killed-run" for p in committed)
    inferred = [
        r
        for r in read_table(root / "tables", "inferred").to_pylist()
        if r["model_id"] == v2.model_id
    ]
    assert sorted(r["slide_id"] for r in inferred) == sorted(
        p.name.removesuffix(".zarr") for p in committed
    )
    assert {r["run_id"] for r in inferred} == {"killed-run"}


def test_a_post_parameter_change_shows_only_current_results(fleet, tmp_path: Path) -> None:
    root, *_ = fleet
    stored = JobConfig.model_validate_json((root / "fleet.json").read_text())
    job = stored.model_copy(
        update={
            "models": ["darkness:1"],
            "post": stored.post.model_copy(update={"min_region_um2": 40_000.0}),
        }
    )
    plan, result = reprocess(root, config=job, progress=False)
    assert result is not None and "ingest" not in result.stages
    slides = result.tables["slides"].to_pylist()
    assert sorted(r["slide_id"] for r in slides) == [f"synth_00{i}" for i in range(4)]
    assert {r["params_hash"] for r in slides} == {job.post.output_hash()}
    assert {r["params_hash"] for r in result.tables["cohort"].to_pylist()} <= {
        job.post.output_hash()
    }


def test_a_changed_slide_is_retried_without_the_flag(fleet) -> None:
    root, manifest, broken, *_ = fleet
    with manifest.open() as handle:
        good = next(r["path"] for r in csv.DictReader(handle) if r["slide_id"] == "synth_000")
    shutil.copy(good, broken)  # the scanner re-exported the file: new content, new key
    plan = plan_reprocess(root)
    assert "broken" in plan.ingest and "broken" not in plan.not_retried.get("ingest", {})
