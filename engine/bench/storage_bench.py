"""``slidefleet bench storage``: the ways a store can hold the slide's pixels, side by side.

For a synthetic slide with about 35 % tissue and the real CMU-1-Small-Region.svs, both converted
as sparse stores with every level decoded and re-encoded as lossless zstd, with the native levels
kept as the slide's own JPEG tiles (the default), and with ``ingest.codec: jpeg`` (quality 90
and 80):
conversion seconds, store bytes over source bytes, level-0 pixel error inside the written chunks,
and how far the demo tumour model's probabilities move when it scores the JPEG store instead.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

_CMU = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "slides"
    / "openslide-testdata"
    / "CMU-1-Small-Region.svs"
)
_MODEL = "demo-unet-tumour"


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _level0_written(store: Path) -> tuple[np.ndarray, np.ndarray]:
    import zarr

    group = zarr.open_group(store, mode="r")
    level0 = np.asarray(group["0"][:])
    chunk = group["0"].chunks[-1]
    if "slidefleet-coverage" in group:
        grid = np.asarray(group["slidefleet-coverage/0"][:]).astype(bool)
        written = np.kron(grid, np.ones((chunk, chunk), bool))[: level0.shape[1], : level0.shape[2]]
    else:
        written = np.ones(level0.shape[1:], bool)
    return level0, written


def _prediction(root: Path, model_id: str) -> np.ndarray:
    import zarr

    (pred,) = (root / "predictions" / model_id).glob("*.zarr")
    return np.asarray(zarr.open_group(pred, mode="r")["0"][:])


def bench_storage(workdir: Path | None, *, quick: bool = False) -> int:
    from engine.infer import infer
    from engine.ingest import IngestParams, convert_slide
    from engine.manifest import read_manifest
    from engine.models import make_demo_models
    from engine.store import FleetLayout
    from engine.synth import generate_cohort

    side = 4096 if quick else 8192
    with tempfile.TemporaryDirectory(prefix="slidefleet-bench-") as tmp:
        base = Path(workdir) if workdir else Path(tmp)
        manifests = [
            (
                f"synth {side}² ~35%",
                generate_cohort(
                    base / "synth35",
                    1,
                    seed=23,
                    width_px=side,
                    height_px=side,
                    tissue_fraction=0.35,
                ),
            )
        ]
        if _CMU.exists():
            cmu = base / "cmu" / "manifest.csv"
            cmu.parent.mkdir(parents=True, exist_ok=True)
            cmu.write_text(f"slide_id,path\ncmu1,{_CMU}\n")
            manifests.append(("CMU-1-Small-Region", cmu))
        models_root = base / "models_root"
        model = next(m for m in make_demo_models(models_root) if m.name == _MODEL)
        decoded = IngestParams(source_tiles=False)  # every level decoded and re-encoded
        modes = [
            ("zstd", decoded),
            ("source (default)", IngestParams()),
            ("jpeg q90", decoded.model_copy(update={"codec": "jpeg", "jpeg_quality": 90})),
            ("jpeg q80", decoded.model_copy(update={"codec": "jpeg", "jpeg_quality": 80})),
        ]
        print(
            "slidefleet bench storage: sparse stores; lossless zstd, the slide's own JPEG tiles "
            f"(the default), re-encoded JPEG chunks; scores of {_MODEL}"
        )
        print(
            f"{'slide':>20s} {'codec':>15s} {'seconds':>8s} {'store/source':>13s} {'level-0 MAE':>12s} "
            f"{'PSNR dB':>8s} {'max |Δp|':>9s} {'mean |Δp|':>10s} {'flips @0.5':>11s}"
        )
        for name, manifest in manifests:
            (entry,) = read_manifest(manifest).entries
            reference: tuple[np.ndarray, np.ndarray] | None = None
            for label, params in modes:
                root = base / f"root_{label.split()[0]}_{label.split()[-1]}_{entry.slide_id}"
                shutil.rmtree(root, ignore_errors=True)
                shutil.copytree(models_root / "models", root / "models")
                started = time.perf_counter()
                result = convert_slide(entry, FleetLayout(root), params)
                seconds = time.perf_counter() - started
                ratio = _bytes(Path(result.store_path)) / entry.path.stat().st_size
                level0, written = _level0_written(Path(result.store_path))
                infer(root, model.ref, progress=False)
                scores = _prediction(root, model.model_id)
                if reference is None:
                    reference = (level0, scores)
                    print(
                        f"{name:>20s} {label:>15s} {seconds:8.2f} {ratio:13.2f} {'-':>12s} {'-':>8s} "
                        f"{'-':>9s} {'-':>10s} {'-':>11s}"
                    )
                    continue
                ref0, ref_scores = reference
                diff = level0[:, written].astype(np.float64) - ref0[:, written]
                mae = float(np.abs(diff).mean())
                mse = float((diff**2).mean())
                psnr = f"{10 * np.log10(255**2 / mse):8.1f}" if mse else f"{'exact':>8s}"
                both = np.isfinite(scores) & np.isfinite(ref_scores)
                delta = np.abs(scores[both] - ref_scores[both])
                flips = float(((scores[both] >= 0.5) != (ref_scores[both] >= 0.5)).mean())
                print(
                    f"{name:>20s} {label:>15s} {seconds:8.2f} {ratio:13.2f} {mae:12.2f} {psnr} "
                    f"{float(delta.max()):9.4f} {float(delta.mean()):10.5f} {flips:11.4%}"
                )
    return 0
