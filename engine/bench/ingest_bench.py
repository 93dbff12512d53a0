"""``slidefleet bench ingest``: conversion throughput against reading through OpenSlide alone.

Each measurement runs in a fresh subprocess so peak RSS belongs to that measurement alone.
The floor reads exactly the regions the conversion reads (every native level, same blocks) and
discards them; the engine additionally writes zstd chunks, builds 2x levels and labels.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_WORKER = "engine.bench.ingest_worker"


def _measure(mode: str, manifest: Path, root: Path) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, "-m", _WORKER, mode, str(manifest), str(root)],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def bench_ingest(workdir: Path | None, *, quick: bool = False) -> int:
    from engine.synth import generate_cohort

    side_px = 2048 if quick else 8192  # both sizes above one 2048-px block when not quick
    with tempfile.TemporaryDirectory(prefix="slidefleet-bench-") as tmp:
        base = Path(workdir) if workdir else Path(tmp)
        rows = []
        for factor in (1, 2):  # 2x the side = 4x the pixels
            size = side_px * factor
            started = time.perf_counter()
            manifest = generate_cohort(base / f"slides_{size}", 1, seed=11, width_px=size, height_px=size)
            generated_s = time.perf_counter() - started
            floor = _measure("floor", manifest, base / f"root_{size}")
            engine = _measure("engine", manifest, base / f"root_{size}")
            rows.append((size, generated_s, floor, engine))

    print("slidefleet bench ingest (one slide per size, one process, lossless zstd, chunk 512)")
    print(f"{'slide':>13s} {'MP':>6s} {'floor MP/s':>11s} {'engine MP/s':>12s} {'ratio':>6s} "
          f"{'floor peak MiB':>15s} {'engine peak MiB':>16s}")
    for size, _generated_s, floor, engine in rows:
        megapixels = floor["megapixels"]
        floor_rate = megapixels / floor["seconds"]
        engine_rate = megapixels / engine["seconds"]
        print(f"{size:>6d}x{size:<6d} {megapixels:6.1f} {floor_rate:11.1f} {engine_rate:12.1f} "
              f"{engine_rate / floor_rate:6.2f} {floor['peak_rss_mib']:15.0f} {engine['peak_rss_mib']:16.0f}")
    small, large = rows[0][3], rows[1][3]
    print(f"peak memory, 4x larger slide / slide: {large['peak_rss_mib'] / small['peak_rss_mib']:.2f} "
          "(1.00 = flat: memory does not grow with slide size)")
    return 0
