"""``slidefleet bench ingest``: conversion against reading through OpenSlide alone, and sparse stores.

Each measurement runs in a fresh subprocess so peak RSS belongs to that measurement alone; the
fleet root is removed before each conversion so nothing is reused.

1. *Floor*: full conversion on all the process's cores against the OpenSlide floor on the same
   cores (every native level read in the conversion's blocks, by as many threads, and discarded).
2. *Sparse*: full and sparse zstd stores, and the default store (sparse, native levels kept as
   the slide's own JPEG tiles), of synthetic slides with about 15, 35 and 70 % tissue (RGB JPEG,
   every 2x level), of one laid out as scanners write (YCbCr 4:2:0, levels 1x/4x/16x) and of the
   real CMU-1-Small-Region.svs (one level): pixels decoded, seconds, store bytes over source bytes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.ingest.levels import default_threads

_WORKER = "engine.bench.ingest_worker"
_CMU = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "slides"
    / "openslide-testdata"
    / "CMU-1-Small-Region.svs"
)


def _measure(mode: str, manifest: Path, root: Path, threads: int) -> dict[str, Any]:
    shutil.rmtree(root, ignore_errors=True)
    output = subprocess.run(
        [sys.executable, "-m", _WORKER, mode, str(manifest), str(root), str(threads)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def _floor_table(base: Path, side_px: int, threads: int) -> None:
    from engine.synth import generate_cohort

    rows = []
    for factor in (1, 2):  # 2x the side = 4x the pixels
        size = side_px * factor
        manifest = generate_cohort(
            base / f"slides_{size}", 1, seed=11, width_px=size, height_px=size
        )
        floor = _measure("floor", manifest, base / f"root_{size}", threads)
        engine = _measure("full", manifest, base / f"root_{size}", threads)
        rows.append((size, floor, engine))
    print(
        f"1. full conversion vs the OpenSlide floor, {threads} threads (lossless zstd, chunk 512)"
    )
    print(
        f"{'slide':>13s} {'MP':>6s} {'floor MP/s':>11s} {'engine MP/s':>12s} {'ratio':>6s} "
        f"{'floor peak MiB':>15s} {'engine peak MiB':>16s}"
    )
    for size, floor, engine in rows:
        megapixels = floor["megapixels"]
        floor_rate, engine_rate = megapixels / floor["seconds"], megapixels / engine["seconds"]
        print(
            f"{size:>6d}x{size:<6d} {megapixels:6.1f} {floor_rate:11.1f} {engine_rate:12.1f} "
            f"{engine_rate / floor_rate:6.2f} {floor['peak_rss_mib']:15.0f} {engine['peak_rss_mib']:16.0f}"
        )
    small, large = rows[0][2], rows[1][2]
    print(
        f"peak memory, 4x larger slide / slide: {large['peak_rss_mib'] / small['peak_rss_mib']:.2f} "
        "(1.00 = flat: memory does not grow with slide size)"
    )


def _sparse_table(base: Path, side_px: int, threads: int) -> None:
    from engine.synth import generate_cohort

    slides: list[tuple[str, Path]] = []
    for fraction in (0.15, 0.35, 0.70):
        manifest = generate_cohort(
            base / f"tissue_{fraction:.2f}",
            1,
            seed=23,
            width_px=side_px,
            height_px=side_px,
            tissue_fraction=fraction,
        )
        slides.append((f"synth {side_px}² ~{fraction:.0%}", manifest))
    # As scanners write: YCbCr 4:2:0 tiles, native levels 1x, 4x, 16x (the others are 2x steps).
    scanner = generate_cohort(
        base / "scanner_0.35",
        1,
        seed=23,
        width_px=side_px,
        height_px=side_px,
        tissue_fraction=0.35,
        colour_space="ycbcr",
        level_step=4,
    )
    slides.append((f"SVS-like {side_px}² ~35%", scanner))
    if _CMU.exists():
        cmu = base / "cmu" / "manifest.csv"
        cmu.parent.mkdir(parents=True, exist_ok=True)
        cmu.write_text(f"slide_id,path\ncmu1,{_CMU}\n")
        slides.append(("CMU-1-Small-Region", cmu))
    print(
        f"\n2. sparse vs full stores, {threads} threads (sparse margin 320 µm, chunk 512; "
        "default = sparse with the slide's own JPEG tiles; verified = default with every copied tile "
        "decoded by OpenSlide and compared)"
    )
    print(
        f"{'slide':>22s} {'tissue':>7s} {'mode':>8s} {'decoded MP':>11s} {'seconds':>8s} {'store/source':>13s} "
        f"{'level-0 chunks':>15s} {'s / full s':>14s}"
    )
    for name, manifest in slides:
        full = _measure("full", manifest, base / "root_sparse_bench", threads)
        sparse = _measure("sparse", manifest, base / "root_sparse_bench", threads)
        tissue = _tissue_fraction(base / "root_sparse_bench")
        default = _measure("default", manifest, base / "root_sparse_bench", threads)
        verified = _measure("verified", manifest, base / "root_sparse_bench", threads)
        for mode, m in (
            ("full", full),
            ("sparse", sparse),
            ("default", default),
            ("verified", verified),
        ):
            ratio = "" if mode == "full" else f"{m['seconds'] / full['seconds']:14.2f}"
            print(
                f"{name:>22s} {tissue:7.1%} {mode:>8s} {m['decoded_mp']:11.1f} {m['seconds']:8.2f} "
                f"{m['store_bytes'] / m['source_bytes']:13.2f} {m['level0_fraction']:15.1%} {ratio}"
            )


def _tissue_fraction(root: Path) -> float:
    from engine.store import read_completion

    (store,) = (root / "slides").glob("*.ome.zarr")
    record = read_completion(store)
    return float(record["result"]["tissue_fraction"]) if record else float("nan")


def bench_ingest(workdir: Path | None, *, quick: bool = False) -> int:
    threads = default_threads()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="slidefleet-bench-") as tmp:
        base = Path(workdir) if workdir else Path(tmp)
        print("slidefleet bench ingest (one slide per measurement, one process)")
        _floor_table(base, 2048 if quick else 8192, threads)
        _sparse_table(base, 4096 if quick else 8192, threads)
    print(f"\n({time.perf_counter() - started:.0f} s in all, slide generation included)")
    return 0
