"""Operating a fleet: one-command runs, run records, job configs, reprocessing from content keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.operate import JobConfig, load_job_config, plan_reprocess, reprocess, score_cohort
from engine.store import read_completion
from tests.infer_models import Darkness, darkness_card, register


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory, synth_cohort: Path, ray_session):
    root = tmp_path_factory.mktemp("operate") / "root"
    root.mkdir()
    register(root, Darkness(), darkness_card("darkness", "1"))
    result = score_cohort(synth_cohort, "darkness", root=root, progress=False)
    return root, result


def test_score_cohort_returns_every_table_and_writes_a_run_record(scored) -> None:
    root, result = scored
    slides = result.to_pandas()["slides"]
    assert sorted(slides["slide_id"]) == ["synth_000", "synth_001", "synth_002", "synth_003"]
    assert set(result.tables) >= {"slides", "regions", "thresholds", "cohort", "failures"}
    assert result.tables["thresholds"].num_rows > 0
    record = json.loads(result.run_record.read_text())
    assert record["run_id"] == result.run_id and result.run_record.parent == root / "runs"
    assert {"ingest", "infer:darkness:1", "post:darkness:1", "views:darkness:1"} <= set(
        record["stages"]
    )
    assert record["stages"]["ingest"]["converted"] == 4
    assert record["stages"]["infer:darkness:1"]["tiles"] > 0
    assert record["versions"]["slidefleet"] and record["versions"]["ray"]
    telemetry = record["slides"]["synth_000"]
    assert telemetry["ingest"]["peak_rss_mib"] > 0 and telemetry["ingest"]["cpu_seconds"] > 0
    assert 0 <= telemetry["infer:darkness:1"]["io_fraction"] <= 1
    assert record["config"]["models"] == ["darkness"]
    assert (root / "fleet.json").exists()


def test_an_unchanged_fleet_has_nothing_to_reprocess(scored) -> None:
    root, _ = scored
    plan, result = reprocess(root, progress=False)
    assert plan.is_empty and result is None, plan.describe()


def test_a_new_model_version_recomputes_its_predictions_and_tables_only(scored) -> None:
    root, first = scored
    stores_before = {p.name: read_completion(p) for p in (root / "slides").glob("*.ome.zarr")}
    new = register(
        root,
        Darkness(),
        darkness_card("darkness", "2").model_copy(
            update={"description": "Test model v2: same arithmetic, new card, new model_id."}
        ),
    )
    plan = plan_reprocess(root)
    assert not plan.ingest
    assert sorted(plan.infer["darkness"]) == ["synth_000", "synth_001", "synth_002", "synth_003"]
    assert "darkness" in plan.post
    plan, result = reprocess(root, progress=False)
    assert result is not None and result.model_ids == {"darkness:2": new.model_id}
    assert "ingest" not in result.stages
    assert {
        p.name: read_completion(p) for p in (root / "slides").glob("*.ome.zarr")
    } == stores_before
    # The old version's predictions and table partitions stay readable side by side.
    old_id = first.model_ids["darkness:1"]
    assert (root / "predictions" / old_id).is_dir() and (
        root / "predictions" / new.model_id
    ).is_dir()
    assert (root / "tables" / "slides" / f"model_id={old_id}").is_dir()
    assert (root / "tables" / "slides" / f"model_id={new.model_id}").is_dir()
    assert plan_reprocess(root).is_empty


def test_a_changed_post_parameter_recomputes_only_post(scored, tmp_path: Path) -> None:
    root, _ = scored
    config = tmp_path / "job.yaml"
    config.write_text("post:\n  min_region_um2: 50000\n")
    stored = JobConfig.model_validate_json((root / "fleet.json").read_text()).model_dump(
        mode="json"
    )
    changed = load_job_config(config, {"root": str(root)}).model_dump(
        mode="json", exclude_unset=True
    )
    job = JobConfig.model_validate({**stored, **changed})
    plan = plan_reprocess(root, job)
    assert not plan.ingest and not any(plan.infer.values()) and list(plan.post) == ["darkness"]
    plan, result = reprocess(root, config=job, progress=False)
    assert result is not None and set(result.stages) == {
        "reprocess",
        f"post:{next(iter(result.model_ids))}",
        f"views:{next(iter(result.model_ids))}",
    }


def test_dry_run_prints_the_plan_and_changes_nothing(scored) -> None:
    root, _ = scored
    before = sorted(p.name for p in (root / "runs").iterdir())
    output = subprocess.run(
        [sys.executable, "-m", "engine.cli", "reprocess", "--root", str(root), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert output.returncode == 0, output.stderr
    assert "plan (dry run)" in output.stdout and "ingest: nothing stale" in output.stdout
    assert sorted(p.name for p in (root / "runs").iterdir()) == before


def test_config_errors_name_the_bad_field(tmp_path: Path) -> None:
    config = tmp_path / "job.yaml"
    config.write_text("root: out\ninfer:\n  batch_size: 0\n")
    with pytest.raises(ConfigError, match=r"infer\.batch_size"):
        load_job_config(config)
    config.write_text("root: out\ningest:\n  chunk_px: 512\n  no_such_option: 1\n")
    with pytest.raises(ConfigError, match=r"ingest\.no_such_option"):
        load_job_config(config)
    toml = tmp_path / "job.toml"
    toml.write_text('root = "out"\nmodels = ["m"]\n[infer]\ntta = "flips"\n')
    job = load_job_config(toml)
    assert job.infer.tta == "flips" and job.root == str(tmp_path / "out")


def test_every_run_flag_has_a_config_field() -> None:
    from engine.cli import build_parser

    run = build_parser()._subparsers._group_actions[0].choices["run"]  # noqa: SLF001
    flags = {a.dest for a in run._actions if a.dest not in {"help", "config", "quiet"}}  # noqa: SLF001
    mapped = {
        "manifest": "manifest",
        "model": "models",
        "root": "root",
        "address": "address",
        "dask_address": "dask_address",
        "demo_models": "demo_models",
        "no_views": "views",
        "strict": "strict",
        "retry_failed": "retry_failed",
        "no_stream": "stream",
        "device": "infer",
    }
    assert flags == set(mapped)
    assert set(mapped.values()) <= set(JobConfig.model_fields)


def test_run_refuses_an_embedding_extractor_before_converting_anything(tmp_path: Path) -> None:
    """An extractor writes features, not score maps: `run` says what to do instead, at once."""
    from engine.errors import ConfigError
    from engine.operate import JobConfig, score_cohort

    job = JobConfig(
        manifest=str(tmp_path / "manifest.csv"),
        root=str(tmp_path / "root"),
        models=["demo-embedder"],
        demo_models=True,
    )
    with pytest.raises(
        ConfigError, match="embedding_extractor.*slidefleet infer --model demo-embedder"
    ):
        score_cohort(config=job, progress=False)
    assert not (tmp_path / "root" / "slides").exists()
