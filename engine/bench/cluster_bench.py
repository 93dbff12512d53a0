"""``slidefleet bench cluster``: the driver's peak memory at 100 and 1,000 slides, and scale-up on
Ray's real autoscaler with fake GPU nodes (scale-up wait, time to first tile, tiles/s on 1 vs 2
nodes).

Each measured infer runs in a process of its own (``python -m engine.bench.cluster_bench infer``)
so its peak RSS is the driver's alone: actors and Ray's own processes are other processes.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DRIVER_SLIDES = (100, 1000)
DRIVER_SLIDES_QUICK = (20, 100)


def _prepare(base: Path, n_slides: int, side_px: int) -> Path:
    """A cohort of ``n_slides`` small slides, ingested, with the demo models; reused when present.

    Tiny slides can come out as blank glass; those are left out (a failures row, as in any
    cohort) and the measurement runs on the slides that hold tissue.
    """
    from engine.ingest import IngestParams, ingest
    from engine.models import make_demo_models
    from engine.synth import generate_cohort

    root = base / f"root-{n_slides}x{side_px}"
    if (root / ".bench-ready").exists():
        return root
    manifest = generate_cohort(
        base / f"cohort-{n_slides}x{side_px}",
        n_slides,
        seed=11,
        width_px=side_px,
        height_px=side_px,
        burden_cycle=("macro", "small"),
        tissue_fraction=0.5,
    )
    report = ingest(manifest, root, params=IngestParams(), progress=False)
    unexpected = [f for f in report.failures if f.error_type != "NoTissue"]
    if unexpected:
        raise RuntimeError(f"bench cohort failed to ingest: {unexpected[0].message}")
    if report.failures:
        print(
            f"    ({len(report.failures)} of {n_slides} generated slides hold no tissue: left out)"
        )
    make_demo_models(root)
    (root / ".bench-ready").write_text("")
    return root


def _infer_in_own_process(
    root: Path, params: dict[str, Any], address: str | None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "engine.bench.cluster_bench",
        "infer",
        str(root),
        json.dumps(params),
    ]
    if address:
        command.append(address)
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"bench infer failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _infer_main(root: str, params_json: str, address: str | None = None) -> None:
    from engine.infer import InferParams, infer

    report = infer(
        Path(root),
        "demo-unet-tumour",
        params=InferParams.model_validate_json(params_json),
        address=address,
        progress=False,
    )
    print(
        json.dumps(
            {
                "slides": len(report.scored),
                "tiles": report.tiles,
                "seconds": report.seconds,
                "steady_tiles_per_s": report.steady_tiles_per_second,
                "scale_up_wait_s": report.scale_up_wait_s,
                "first_tile_s": report.first_tile_s,
                "actors": len(report.actors),
                "device": report.device,
                "actors_joined_late": report.actors_joined_late,
                "node_ids": sorted({a.get("node_id", "?") for a in report.actors}),
                "driver_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "failures": len(report.failures),
            }
        )
    )


def bench_cluster(workdir: Path | None, *, quick: bool = False) -> int:
    from engine.bench.fake_cluster import fake_cluster

    with tempfile.TemporaryDirectory(prefix="slidefleet-bench-cluster-") as tmp:
        base = Path(workdir) if workdir else Path(tmp)
        print("slidefleet bench cluster")
        print(
            "  driver peak RSS of infer (own process; slides of 512x512 px, demo-unet-tumour, 2 CPU actors):"
        )
        for n in DRIVER_SLIDES_QUICK if quick else DRIVER_SLIDES:
            root = _prepare(base, n, 512)
            shutil.rmtree(root / "predictions", ignore_errors=True)  # score every slide, every time
            got = _infer_in_own_process(
                root, {"device": "cpu", "max_actors": 2, "unit_tiles": 4}, None
            )
            print(
                f"    {n:5d} slides  {got['tiles']:7d} tiles  driver peak RSS {got['driver_peak_rss_mib']:6.0f} MiB"
                f"  ({got['seconds']:.0f} s, {got['failures']} failed)"
            )

        # Large enough (~1,900 tiles) that a second GPU node has time to join and take work.
        side = 2048 if quick else 16384
        root = _prepare(base, 2, side)
        print(
            f"  fake autoscaling cluster (CPU-only head, gpu_node type min_workers 0; 2 slides of {side}x{side}):"
        )
        for nodes in (1, 2):
            shutil.rmtree(root / "predictions", ignore_errors=True)
            started = time.perf_counter()
            with fake_cluster(head_cpus=1, gpu_nodes=nodes, gpu_node_cpus=1) as cluster:
                got = _infer_in_own_process(
                    root,
                    {"device": "auto", "max_actors": nodes, "unit_tiles": 4},
                    cluster.address,
                    env=cluster.client_env(dict(os.environ)),
                )
            print(
                f"    {nodes} GPU node(s): device {got['device'].get('device')} ({got['device'].get('reason')})"
            )
            print(
                f"      scale-up wait {got['scale_up_wait_s']:.1f} s, first tile after {got['first_tile_s']:.1f} s, "
                f"{got['actors']} actor(s) on {len(got['node_ids'])} node(s) ({got['actors_joined_late']} joined "
                f"late), steady {got['steady_tiles_per_s']:.1f} tiles/s, {got['tiles']} tiles in "
                f"{got['seconds']:.1f} s (cluster up + run {time.perf_counter() - started:.0f} s)"
            )
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "infer":
        _infer_main(*sys.argv[2:])
