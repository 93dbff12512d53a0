"""``slidefleet bench infer``: the engine's tiles/s against a naive single-process loop.

Both score exactly the same tissue tiles with the same demo model (``demo-unet-tumour``, trained
here in seconds) and the same batch size. The naive loop is what users write today: OpenSlide
``read_region`` per tile, resize if needed, batch, forward, in one process using every core
through torch's own threads. The engine reads from the OME-Zarr store with one actor per GPU (per
CPU without GPUs), overlapping reading with the model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def bench_infer(workdir: Path | None, *, quick: bool = False, batch_size: int = 32) -> int:
    from engine.infer import InferParams, infer
    from engine.ingest import ingest
    from engine.models import make_demo_models
    from engine.synth import generate_cohort

    side_px, n_slides = (4096, 1) if quick else (16384, 2)
    with tempfile.TemporaryDirectory(prefix="slidefleet-bench-infer-") as tmp:
        base = Path(workdir) if workdir else Path(tmp)
        manifest = generate_cohort(
            base / "cohort",
            n_slides,
            seed=5,
            width_px=side_px,
            height_px=side_px,
            burden_cycle=("macro",),
        )
        root = base / "root"
        ingest(manifest, root, progress=False)
        make_demo_models(root)
        report = infer(
            root, "demo-unet-tumour", params=InferParams(batch_size=batch_size), progress=False
        )
        naive = json.loads(
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "engine.bench.infer_naive",
                    str(root),
                    str(manifest),
                    str(batch_size),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )

    engine_rate = report.steady_tiles_per_second
    print(
        f"slidefleet bench infer: demo-unet-tumour (tile 128 px at 2 µm/px), batch {batch_size}, "
        f"{n_slides} slide(s) of {side_px}x{side_px} px"
    )
    print(f"  tiles scored            engine {report.tiles}  naive {naive['tiles']}")
    print(
        f"  naive loop (OpenSlide read_region + forward, 1 process): {naive['tiles_per_s']:8.1f} tiles/s, "
        f"peak RSS {naive['peak_rss_mib']:.0f} MiB"
    )
    print(
        f"  engine, steady state ({len(report.actors)} actor(s)):            {engine_rate:8.1f} tiles/s  "
        f"ratio {engine_rate / naive['tiles_per_s']:.2f}"
    )
    print(
        f"  engine, wall incl. Ray/actor start-up:                 {report.tiles_per_second:8.1f} tiles/s"
    )
    for actor in report.actors:
        print(
            f"  actor pid {actor['pid']} {actor['device']:>6s} gpu_ids {actor['gpu_ids']}: "
            f"{actor['tiles']} tiles, model busy {actor['model_busy_fraction']:.2f} of its wall time, "
            f"peak RSS {actor['peak_rss_mib']:.0f} MiB"
        )
    return 0
