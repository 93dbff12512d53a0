"""Benchmarks: commands that print ratios measured in one run (never timed unit tests)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def run_benchmark(
    stage: str,
    workdir: Path | None,
    *,
    quick: bool = False,
    slides: Sequence[int] | None = None,
    wsinfer_python: str | None = None,
) -> int:
    if stage == "cohort":
        from engine.bench.cohort_bench import bench_cohort

        return bench_cohort(workdir, slides=slides or ((10,) if quick else (10, 100)), quick=quick)
    if stage == "ingest":
        from engine.bench.ingest_bench import bench_ingest

        return bench_ingest(workdir, quick=quick)
    if stage == "infer":
        from engine.bench.infer_bench import bench_infer

        return bench_infer(workdir, quick=quick)
    if stage == "post":
        from engine.bench.post_bench import bench_post

        return bench_post(workdir, quick=quick)
    if stage == "qc":
        from engine.bench.qc_bench import bench_qc

        return bench_qc(workdir, quick=quick)
    if stage == "storage":
        from engine.bench.storage_bench import bench_storage

        return bench_storage(workdir, quick=quick)
    if stage == "cluster":
        from engine.bench.cluster_bench import bench_cluster

        return bench_cluster(workdir, quick=quick)
    if stage == "wsinfer":
        from engine.bench.wsinfer_bench import bench_wsinfer

        return bench_wsinfer(workdir, wsinfer_python=wsinfer_python, quick=quick)
    raise ValueError(f"no benchmark for stage {stage!r}")
