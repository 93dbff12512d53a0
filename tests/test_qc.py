"""`slidefleet qc` on real slide files: pen ink and blur are measured, flagged with reasons, gated."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import openslide
import pyarrow.parquet as pq
import pytest
from scipy import ndimage

from engine.cli import main
from engine.ingest import ingest
from engine.qc.params import QcParams
from engine.qc.stage import qc
from engine.tables.failures import read_failures
from engine.tables.writer import read_table
from tests.conftest import write_plain_tiff_slide

pytestmark = pytest.mark.usefixtures("ray_session")


def _level0(path: Path) -> np.ndarray:
    with openslide.OpenSlide(str(path)) as slide:
        region = slide.read_region((0, 0), 0, slide.dimensions).convert("RGB")
    return np.asarray(region)


@pytest.fixture(scope="module")
def qc_fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], Path]:
    """Five synthetic slides; one gets a blue marker stroke, one is blurred, as a scanner would."""
    from engine.synth import generate_cohort

    out = tmp_path_factory.mktemp("qc")
    manifest = generate_cohort(out / "cohort", 5, seed=11, width_px=2048, height_px=2048)
    with Path(manifest).open() as handle:
        rows = list(csv.DictReader(handle))
    paths = {row["slide_id"]: Path(manifest).parent / row["path"] for row in rows}
    ids = sorted(paths)
    pen_id, blur_id = ids[0], ids[1]

    inked = _level0(paths[pen_id]).copy()
    inked[300:420, 200:1800] = (25, 70, 200)  # a marker line across the slide
    write_plain_tiff_slide(paths[pen_id], inked, 0.5)

    sharp = _level0(paths[blur_id]).astype(np.float32)
    soft = np.stack([ndimage.gaussian_filter(sharp[..., c], 12) for c in range(3)], axis=-1)
    write_plain_tiff_slide(paths[blur_id], np.clip(np.round(soft), 0, 255).astype(np.uint8), 0.5)

    root = out / "root"
    report = ingest(manifest, root, progress=False)
    assert not report.failures
    return root, {"pen": pen_id, "blur": blur_id}, Path(manifest)


def test_qc_flags_pen_and_blur_with_reasons(qc_fleet) -> None:
    root, which, _ = qc_fleet
    report = qc(root, params=QcParams(pixel_um=2.0), progress=False)
    rows = {row["slide_id"]: row for row in report.rows}
    assert len(rows) == 5 and not report.failures
    pen, blur = rows[which["pen"]], rows[which["blur"]]
    stroke_fraction = 120 * 1600 / 2048**2
    assert pen["pen_fraction"] == pytest.approx(stroke_fraction, rel=0.15)
    assert "pen" in pen["flags"]
    assert any(r.startswith("pen: share of the slide under pen ink") for r in pen["reasons"])
    sharp = [r["laplacian_var_median"] for s, r in rows.items() if s != which["blur"]]
    assert blur["laplacian_var_median"] < min(sharp) / 5
    assert "blur" in blur["flags"]
    clean = [s for s in rows if s not in which.values()]
    for slide_id in clean:
        assert rows[slide_id]["flags"] == [], rows[slide_id]["reasons"]
        assert rows[slide_id]["pen_fraction"] < 0.002
    # Annotated slides have their objects measured (the generator draws tumour polygons).
    annotated = [r for r in rows.values() if r.get("annotation_objects")]
    assert annotated and all(r["annotation_area_um2_median"] > 0 for r in annotated)
    assert not any(r["excluded"] for r in rows.values())  # no gate asked for

    table = read_table(root / "tables", "qc").to_pylist()
    assert sorted(r["slide_id"] for r in table) == sorted(rows)
    assert {r["slide_id"]: r["flags"] for r in table}[which["pen"]] == pen["flags"]
    # The cohort robust z-scores are stored, and equal (x - median) / (1.4826 MAD) computed here.
    by_id = {r["slide_id"]: r for r in table}
    for column in ("pen_fraction", "laplacian_var_median", "brightness"):
        values = np.array([by_id[s][column] for s in sorted(by_id)], np.float64)
        median = np.median(values)
        mad = 1.4826 * np.median(np.abs(values - median))
        for slide_id, value in zip(sorted(by_id), values, strict=True):
            stored = by_id[slide_id][f"z_{column}"]
            if mad > 0:
                assert stored == pytest.approx((value - median) / mad, rel=1e-9, abs=1e-12)
            else:
                assert stored == 0.0 or np.isinf(stored)
    assert by_id[which["pen"]]["z_pen_fraction"] > 3.5
    # Blur is flagged by its absolute limit; among five slides its z is the cohort's extreme.
    z_blurred = {s: r["z_blurred_tile_fraction"] for s, r in by_id.items()}
    assert z_blurred[which["blur"]] > 0
    assert z_blurred[which["blur"]] == max(z_blurred.values())
    assert by_id[which["blur"]]["z_laplacian_var_median"] == min(
        r["z_laplacian_var_median"] for r in by_id.values()
    )


def test_qc_gate_keeps_flagged_slides_out_with_a_failures_row(qc_fleet, capsys) -> None:
    root, which, _ = qc_fleet
    code = main(["qc", "--root", str(root), "--pixel-um", "2", "--exclude", "pen", "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "1 excluded" in printed and "(excluded)" in printed
    failures = read_failures(root / "tables").to_pylist()
    gated = [f for f in failures if f["stage"] == "qc" and f["error_type"] == "QcExcluded"]
    assert [f["slide_id"] for f in gated] == [which["pen"]]
    assert "qc.exclude" in gated[0]["message"] and "pen ink" in gated[0]["message"]
    parts = list((root / "tables" / "qc").rglob("*.parquet"))
    assert len(parts) >= 1 and pq.read_table(parts[0]).num_rows == 5

    # `slidefleet infer` on its own honours the gate too: the inked slide is not scored.
    from tests.infer_models import Darkness, darkness_card, register

    registered = register(root, Darkness(), darkness_card("gate-darkness"))
    assert main(["infer", "--model", "gate-darkness", "--root", str(root), "--quiet"]) == 0
    assert "1 slide(s) kept out by the QC gate (qc.exclude): " + which["pen"] in (
        capsys.readouterr().out
    )
    scored = {
        p.name.removesuffix(".zarr")
        for p in (root / "predictions" / registered.model_id).glob("*.zarr")
    }
    assert which["pen"] not in scored and len(scored) == 4


def test_run_gates_excluded_slides_out_of_infer_and_post(qc_fleet) -> None:
    """`run` with qc.exclude: the inked slide gets a QC failures row and no prediction; the rest go on."""
    from engine.operate import JobConfig, score_cohort
    from tests.infer_models import Darkness, darkness_card, register

    root, which, manifest = qc_fleet
    registered = register(root, Darkness(), darkness_card("qc-darkness"))
    job = JobConfig(
        manifest=str(manifest),
        root=str(root),
        models=["qc-darkness"],
        views=False,
        qc=QcParams(pixel_um=2.0, exclude=("pen",)),
    )
    result = score_cohort(config=job, progress=False)
    predictions = root / "predictions" / registered.model_id
    scored = sorted(p.name.removesuffix(".zarr") for p in predictions.glob("*.zarr"))
    assert which["pen"] not in scored and len(scored) == 4
    assert sorted(result.to_pandas()["slides"]["slide_id"]) == scored
    mine = [f for f in result.failures if f.slide_id == which["pen"]]
    assert [(f.stage, f.error_type) for f in mine] == [("qc", "QcExcluded")], mine
    record = result.stages["qc"]
    assert record["measured"] == 5 and record["excluded"] == 1 and record["seconds_per_slide"] > 0

    # Lifting the gate (QC runs again without it) lets the slide be scored on the next run.
    lifted = job.model_copy(update={"qc": QcParams(pixel_um=2.0)})
    again = score_cohort(config=lifted, progress=False)
    assert which["pen"] in set(again.to_pandas()["slides"]["slide_id"])
    assert not [f for f in again.failures if f.slide_id == which["pen"]]


def test_qc_exclude_without_the_stage_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="needs QC to run"):
        QcParams(enabled=False, exclude=("blur",))
