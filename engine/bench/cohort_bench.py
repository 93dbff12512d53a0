"""``slidefleet bench cohort --slides N``: a whole run, streamed vs stage after stage.

The same N small synthetic slides (the project's generator) and the same small real TorchScript
model go through ``score_cohort`` twice, each in a fresh subprocess on a fresh fleet root with its
own local Ray: once with ``stream: false`` (each stage over the whole cohort, then the next) and
once streamed. Each subprocess samples the RSS of its whole process tree every 50 ms (the driver,
the raylet and every Ray worker and actor are its descendants), so the peak includes the workers.

Printed per N: the staged run's stage seconds, their sum and the slowest stage; the streamed
makespan against both (the goal is a makespan at most 1.15x the slowest stage); the time to the
first slide row (a post result) in each mode; and each mode's peak tree RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_SLIDE_PX = 1024
_QUICK_PX = 768


def _prepare(base: Path, n: int, slide_px: int) -> Path:
    from engine.synth import generate_cohort

    out = base / f"slides_{n}_{slide_px}"
    manifest = out / "manifest.csv"
    if not manifest.exists():
        generate_cohort(out, n, seed=11, width_px=slide_px, height_px=slide_px)
    return manifest


def _measure(mode: str, manifest: Path, root: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.bench.cohort_bench",
            "--worker",
            mode,
            str(manifest),
            str(root),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"bench worker ({mode}) failed:\n{done.stderr[-4000:]}")
    return json.loads(lines[-1])


def _worker(mode: str, manifest: Path, root: Path) -> None:
    import ray

    from engine.bench.post_bench import _register_bench_model, _TreeMonitor
    from engine.operate import JobConfig, score_cohort

    root.mkdir(parents=True, exist_ok=True)
    model = _register_bench_model(root)
    with _TreeMonitor() as monitor:
        started = time.perf_counter()
        for attempt in range(3):  # a loaded machine can miss Ray's 30 s raylet start-up window
            try:
                ray.init(
                    address="local",
                    num_cpus=os.cpu_count(),
                    include_dashboard=False,
                    log_to_driver=False,
                )
                break
            except Exception:  # noqa: BLE001 - retried, then raised
                ray.shutdown()
                if attempt == 2:
                    raise
        ray_start_s = time.perf_counter() - started
        job = JobConfig(
            manifest=str(manifest), root=str(root), models=[model.ref], stream=(mode == "stream")
        )
        result = score_cohort(config=job, progress=False)
        makespan = time.perf_counter() - started
        ray.shutdown()
    stages = {
        name: values.get("seconds")
        for name, values in result.stages.items()
        if name.split(":")[0] in ("ingest", "infer", "post", "views")
    }
    first_row = result.stages.get("stream", {}).get("first_slide_row_s")
    first_views = result.stages.get("stream", {}).get("first_slide_views_s")
    print(
        json.dumps(
            {
                "mode": mode,
                "makespan_s": makespan,
                "ray_start_s": ray_start_s,
                "stages": stages,
                "first_slide_row_s": first_row,
                "first_slide_views_s": first_views,
                "peak_rss_mib": monitor.peak_bytes / 2**20,
                "slides": result.tables["slides"].num_rows,
                "failures": len(result.failures),
            }
        )
    )


def bench_cohort(workdir: Path | None, *, slides: Sequence[int], quick: bool = False) -> int:
    slide_px = _QUICK_PX if quick else _SLIDE_PX
    with tempfile.TemporaryDirectory(prefix="slidefleet-bench-cohort-") as tmp:
        base = Path(workdir) if workdir else Path(tmp)
        print(
            f"slidefleet bench cohort: {slide_px}x{slide_px} px synthetic slides at 0.5 µm/px, a small "
            f"TorchScript model, {os.cpu_count()} CPUs; each run a fresh process tree and a fresh root"
        )
        header = (
            f"{'slides':>6s} {'staged s':>9s} {'sum stages':>10s} {'slowest':>8s} {'streamed s':>10s} "
            f"{'÷sum':>5s} {'÷slowest':>8s} {'1st row staged':>14s} {'1st row streamed':>16s} "
            f"{'1st views streamed':>18s} {'RSS staged':>10s} {'RSS streamed':>12s}"
        )
        rows = []
        for n in slides:
            manifest = _prepare(base, n, slide_px)
            stamp = f"{n}-{int(time.time())}"
            staged = _measure("staged", manifest, base / f"root-staged-{stamp}")
            streamed = _measure("stream", manifest, base / f"root-stream-{stamp}")
            # Stage seconds of the staged run, plus its Ray start (a streamed run pays it too).
            stage_s = {k: v for k, v in staged["stages"].items() if v is not None}
            total = sum(stage_s.values())
            slowest_name, slowest = max(stage_s.items(), key=lambda kv: kv[1])
            staged_first = sum(v for k, v in stage_s.items() if not k.startswith("views"))
            rows.append((n, staged, streamed, total, slowest_name, slowest, staged_first))
            print(
                f"  {n} slides: staged stages "
                + ", ".join(f"{k} {v:.1f}s" for k, v in stage_s.items())
            )
        print(header)
        for n, staged, streamed, total, _name, slowest, staged_first in rows:
            work = streamed["makespan_s"] - streamed["ray_start_s"]
            first = streamed["first_slide_row_s"]
            first_views = streamed.get("first_slide_views_s")
            print(
                f"{n:6d} {staged['makespan_s']:9.1f} {total:10.1f} {slowest:8.1f} {streamed['makespan_s']:10.1f} "
                f"{work / total:5.2f} {work / slowest:8.2f} {staged_first:14.1f} "
                f"{'-' if first is None else f'{first:.1f}':>16s} "
                f"{'-' if first_views is None else f'{first_views:.1f}':>18s} {staged['peak_rss_mib']:8.0f}Mi "
                f"{streamed['peak_rss_mib']:10.0f}Mi"
            )
        print(
            "÷sum and ÷slowest: the streamed makespan without Ray's start-up, over the staged run's sum of "
            "stage seconds and over its slowest stage alone. 1st row: seconds to the first slide's post row "
            "(staged: after ingest, infer and post of the whole cohort); 1st views: seconds to the first slide's "
            "heatmap, panel, GeoJSON and gallery (staged: only after every stage's whole cohort)."
        )
        for n, staged, streamed, *_ in rows:
            if staged["failures"] or streamed["failures"]:
                print(
                    f"  note: {n} slides: {staged['failures']} staged / {streamed['failures']} streamed failure rows"
                )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.bench.cohort_bench")
    parser.add_argument("--worker", nargs=3, metavar=("MODE", "MANIFEST", "ROOT"))
    args = parser.parse_args(argv)
    if args.worker:
        mode, manifest, root = args.worker
        _worker(mode, Path(manifest), Path(root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
