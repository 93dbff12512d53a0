"""``slidefleet bench wsinfer --wsinfer-python PY``: a first pass against WSInfer, same slides and model.

What a user would pick instead of SlideFleet to score patches is WSInfer (``pip install wsinfer``,
which needs ``zarr<3`` (and ``tiffslide<3``) and so lives in its own environment; ``PY`` is that environment's python).
Both tools get the same slides (the real CMU-1-Small-Region and synthetic slides at ~35 % tissue,
all in one folder) and the same model: a torchvision ResNet-18 with random weights (seeded,
nothing downloaded), traced to TorchScript, described by one WSInfer ``config.json`` (224 px at
0.5 µm/px, ImageNet normalisation) that SlideFleet registers as its card.

Measured, rounds interleaved (WSInfer, SlideFleet, then SlideFleet, WSInfer), each run a fresh
output folder and a fresh process tree sampled every 50 ms for its peak RSS (Ray's workers and
WSInfer's data-loader workers included):

- WSInfer: ``wsinfer run`` (tissue mask, patching, inference, CSV and GeoJSON out);
- SlideFleet: ``slidefleet run --no-views`` (conversion, tissue, streamed scoring, post) and then
  ``slidefleet tiles`` (the per-tile table and tile GeoJSON, WSInfer's outputs); both timed.

Then the two tools' probabilities are compared on the tiles both scored (same level-0 x, y):
Pearson r and mean |Δp|.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.bench import torchvision_cpu
from engine.bench.ingest_bench import _CMU

MODEL_NAME = "bench-resnet18"
PATCH_PX = 224
MPP = 0.5
CLASS_NAMES = ("normal", "tumour")

# WSInfer 0.6.1 next to PyPI's CPU torch 2.13: torchvision's compiled ops do not load, so the
# WSInfer process runs engine.bench.torchvision_cpu's source first (that environment has no
# SlideFleet); and its CLI loads the model zoo's registry from the network at import, which a
# local model does not need.
_WSINFER_MAIN = (
    Path(torchvision_cpu.__file__).read_text()
    + """
import sys
import_torchvision()
import wsinfer_zoo.client as zoo
zoo.load_registry = lambda registry_file=None: zoo.ModelRegistry(models={})
from wsinfer.cli.cli import cli
sys.argv[0] = "wsinfer"
cli()
"""
)


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss_mib: float


def _config() -> dict[str, object]:
    return {
        "spec_version": "1.0",
        "architecture": "resnet18",
        "num_classes": len(CLASS_NAMES),
        "class_names": list(CLASS_NAMES),
        "patch_size_pixels": PATCH_PX,
        "spacing_um_px": MPP,
        "transform": [
            {"name": "Resize", "arguments": {"size": PATCH_PX}},
            {"name": "ToTensor"},
            {
                "name": "Normalize",
                "arguments": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
            },
        ],
    }


def _model(base: Path) -> tuple[Path, Path]:
    """A seeded random ResNet-18 traced to TorchScript, and its WSInfer config.json."""
    import torch

    torch.manual_seed(0)
    module = (
        torchvision_cpu.import_torchvision()
        .models.resnet18(weights=None, num_classes=len(CLASS_NAMES))
        .eval()
    )
    path = base / "model" / "resnet18.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.jit.trace(module, torch.zeros(1, 3, PATCH_PX, PATCH_PX)).save(str(path))
    config = path.parent / "config.json"
    config.write_text(json.dumps(_config(), indent=2))
    return path, config


def _slides(base: Path, side_px: int, n_synthetic: int) -> tuple[Path, Path]:
    """A folder holding only the slides (WSInfer's input) and a SlideFleet manifest of the same files."""
    from engine.synth import generate_cohort

    wsi_dir = base / "wsi"
    manifest = base / "manifest.csv"
    if manifest.exists():
        return wsi_dir, manifest
    wsi_dir.mkdir(parents=True, exist_ok=True)
    synth = generate_cohort(
        base / "synth",
        n_synthetic,
        seed=31,
        width_px=side_px,
        height_px=side_px,
        tissue_fraction=0.35,
    )
    sources = sorted((synth.parent / "slides").glob("*.tif"))
    if _CMU.exists():
        sources.append(_CMU)
    rows = ["slide_id,path"]
    for source in sources:
        target = wsi_dir / source.name
        if not target.exists():
            target.symlink_to(source.resolve())
        rows.append(f"{source.stem},{target}")
    manifest.write_text("\n".join(rows) + "\n")
    return wsi_dir, manifest


def _run_measured(command: Sequence[str], *, env: dict[str, str] | None = None) -> Measured:
    """Run ``command``; its wall seconds and the peak RSS of its whole process tree."""
    import psutil

    started = time.perf_counter()
    process = subprocess.Popen(
        list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    root = psutil.Process(process.pid)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            total = 0
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                tree = []
            for proc in tree:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
            peak = max(peak, total)
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(
            f"{command[0]} … exited {process.returncode}:\n{output.decode(errors='replace')[-3000:]}"
        )
    return Measured(seconds, peak / 2**20)


def _wsinfer(python: str, wsi_dir: Path, out: Path, model: Path, config: Path) -> Measured:
    shutil.rmtree(out, ignore_errors=True)
    return _run_measured(
        [
            python,
            "-c",
            _WSINFER_MAIN,
            "run",
            "--wsi-dir",
            str(wsi_dir),
            "--results-dir",
            str(out),
            "--config",
            str(config),
            "--model-path",
            str(model),
        ]
    )


def _slidefleet(manifest: Path, root: Path, model: Path, config: Path) -> tuple[Measured, Measured]:
    shutil.rmtree(root, ignore_errors=True)
    cli = [sys.executable, "-m", "engine.cli"]
    subprocess.run(
        [
            *cli,
            "models",
            "add",
            str(model),
            "--card",
            str(config),
            "--name",
            MODEL_NAME,
            "--version",
            "1",
            "--root",
            str(root),
        ],
        check=True,
        capture_output=True,
    )
    run = _run_measured(
        [
            *cli,
            "run",
            str(manifest),
            "--root",
            str(root),
            "--model",
            MODEL_NAME,
            "--no-views",
            "--quiet",
            "--strict",
        ]
    )
    tiles = _run_measured([*cli, "tiles", "--model", MODEL_NAME, "--root", str(root), "--strict"])
    return run, tiles


def _stages(root: Path) -> str:
    (latest,) = sorted((root / "runs").glob("*.json"))[-1:]
    stages = json.loads(latest.read_text()).get("stages", {})
    parts = [
        f"{name.split(':')[0]} {values['seconds']:.1f} s"
        for name, values in stages.items()
        if isinstance(values.get("seconds"), (int, float))
    ]
    infer = next((v for k, v in stages.items() if k.startswith("infer:")), {})
    if infer.get("steady_tiles_per_s"):
        parts.append(f"infer steady {infer['steady_tiles_per_s']:.1f} tiles/s")
    return ", ".join(parts)


def _wsinfer_probabilities(out: Path) -> dict[tuple[str, int, int], float]:
    found = {}
    for path in sorted((out / "model-outputs-csv").glob("*.csv")):
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                found[(path.stem, int(float(row["minx"])), int(float(row["miny"])))] = float(
                    row[f"prob_{CLASS_NAMES[1]}"]
                )
    return found


def _slidefleet_probabilities(root: Path) -> dict[tuple[str, int, int], float]:
    import pyarrow.dataset as ds

    table = ds.dataset(root / "tables" / "tiles", format="parquet").to_table()
    rows = table.select(["slide_id", "x", "y", f"prob_{CLASS_NAMES[1]}"]).to_pylist()
    return {
        (r["slide_id"], int(r["x"]), int(r["y"])): float(r[f"prob_{CLASS_NAMES[1]}"]) for r in rows
    }


def _agreement(
    wsinfer: dict[tuple[str, int, int], float], ours: dict[tuple[str, int, int], float]
) -> str:
    lines = []
    for slide_id in sorted({k[0] for k in wsinfer} | {k[0] for k in ours}):
        theirs = {k: v for k, v in wsinfer.items() if k[0] == slide_id}
        mine = {k: v for k, v in ours.items() if k[0] == slide_id}
        # The same tile on both grids: level-0 corners within 2 px (a scanner's 0.499 µm/px makes
        # a 112 µm tile 224.4 px, which the two tools round differently).
        nearest = {}
        for key in theirs:
            match = next(
                (
                    k
                    for dx in range(-2, 3)
                    for dy in range(-2, 3)
                    if (k := (slide_id, key[1] + dx, key[2] + dy)) in mine
                ),
                None,
            )
            if match is not None:
                nearest[key] = match
        common = sorted(nearest)
        if len(common) < 2:
            lines.append(
                f"    {slide_id}: WSInfer {len(theirs)} tiles, SlideFleet {len(mine)} tiles, "
                f"{len(common)} at the same position"
            )
            continue
        a = np.array([theirs[k] for k in common])
        b = np.array([mine[nearest[k]] for k in common])
        r = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
        lines.append(
            f"    {slide_id}: WSInfer {len(theirs)} tiles, SlideFleet {len(mine)} tiles, {len(common)} at "
            f"the same position (±2 px): Pearson r {r:.4f}, mean |Δp| {np.abs(a - b).mean():.2e}"
        )
    return "\n".join(lines)


def bench_wsinfer(workdir: Path | None, *, wsinfer_python: str | None, quick: bool = False) -> int:
    python = wsinfer_python or os.environ.get("SLIDEFLEET_WSINFER_PYTHON")
    if not python:
        print(
            "slidefleet bench wsinfer: give --wsinfer-python, the python of an environment with "
            "`pip install wsinfer==0.6.1 torch==2.13.0 torchvision==0.28.0` (see the README)",
            file=sys.stderr,
        )
        return 2
    side_px, n_synthetic = (4096, 1) if quick else (8192, 2)
    with tempfile.TemporaryDirectory(prefix="slidefleet-bench-wsinfer-") as tmp:
        base = Path(workdir) if workdir else Path(tmp)
        wsi_dir, manifest = _slides(base, side_px, n_synthetic)
        model, config = _model(base)
        print(
            f"slidefleet bench wsinfer: {n_synthetic} synthetic {side_px}² slides (~35 % tissue) + "
            f"CMU-1-Small-Region, random-weight ResNet-18 (TorchScript, {PATCH_PX} px at {MPP} µm/px), "
            f"{os.cpu_count()} CPUs, no GPU"
        )
        runs: dict[str, list[Measured]] = {"wsinfer": [], "run": [], "tiles": []}
        for order in (("wsinfer", "slidefleet"), ("slidefleet", "wsinfer")):
            for tool in order:
                if tool == "wsinfer":
                    runs["wsinfer"].append(
                        _wsinfer(python, wsi_dir, base / "out-wsinfer", model, config)
                    )
                else:
                    run, tiles = _slidefleet(manifest, base / "root-slidefleet", model, config)
                    runs["run"].append(run)
                    runs["tiles"].append(tiles)
        wsinfer_tiles = _wsinfer_probabilities(base / "out-wsinfer")
        our_tiles = _slidefleet_probabilities(base / "root-slidefleet")
        print(
            f"{'round':>5s} {'WSInfer s':>10s} {'SlideFleet run s':>17s} {'ratio':>6s} {'+ tiles export s':>17s} "
            f"{'WSInfer RSS':>12s} {'SlideFleet RSS':>15s}"
        )
        for i, (theirs, run, tiles) in enumerate(
            zip(runs["wsinfer"], runs["run"], runs["tiles"], strict=True), 1
        ):
            print(
                f"{i:5d} {theirs.seconds:10.1f} {run.seconds:17.1f} {run.seconds / theirs.seconds:6.2f} "
                f"{tiles.seconds:17.1f} {theirs.peak_rss_mib:10.0f}Mi {run.peak_rss_mib:13.0f}Mi"
            )
        wsinfer_s = float(np.mean([m.seconds for m in runs["wsinfer"]]))
        run_s = float(np.mean([m.seconds for m in runs["run"]]))
        print(
            f"  tiles scored: WSInfer {len(wsinfer_tiles)} ({len(wsinfer_tiles) / wsinfer_s:.1f} tiles/s over its "
            f"wall), SlideFleet {len(our_tiles)} ({len(our_tiles) / run_s:.1f} tiles/s over run's wall); each "
            "tool's own tissue detection decides which tiles"
        )
        print(f"  SlideFleet run stages (last run): {_stages(base / 'root-slidefleet')}")
        print("  agreement on tiles at the same level-0 position (probability of 'tumour'):")
        print(_agreement(wsinfer_tiles, our_tiles))
        print(
            "ratio: `slidefleet run --no-views` (convert, QC, score, post: stores, score maps, tables) over "
            "`wsinfer run` (patch, score, CSV + GeoJSON); below 1 is faster. The tiles export (tables/tiles "
            "and tile GeoJSON, WSInfer's outputs) is a second command with its own Ray start."
        )
    return 0
