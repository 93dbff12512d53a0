"""``slidefleet bench qc``: what QC and explanations cost, against the work they cannot avoid.

- QC: seconds per slide of the whole per-slide QC (read the 4 µm/px level and its tissue label,
  measure, read the annotation) against only reading that level (the floor); ratio = QC / floor.
- Explanations: seconds per tile of input x gradient (TorchScript) and Grad-CAM (torch.export)
  on the demo U-Net's architecture, against one forward pass of the same tiles.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _best_of(repeats: int, run) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def _bench_qc(base: Path, side_px: int, slides: int) -> None:
    from engine.ingest import ingest
    from engine.qc.params import QcParams
    from engine.qc.slide_task import qc_slide
    from engine.store.slide_store import SlideStore
    from engine.synth import generate_cohort

    manifest = generate_cohort(base / "slides", slides, seed=3, width_px=side_px, height_px=side_px)
    root = base / "root"
    ingest(manifest, root, progress=False, num_cpus=2)
    params = QcParams()
    stores = sorted((root / "slides").glob("*.ome.zarr"))
    qc_s, floor_s = [], []
    for path in stores:
        store = SlideStore.open(path)
        level = store.finest_level_not_coarser_than(params.pixel_um)
        floor_s.append(_best_of(3, lambda: np.asarray(store.image(level)[:])))  # noqa: B023
        qc_s.append(_best_of(3, lambda: qc_slide(path, params)))  # noqa: B023
    megapixels = side_px * side_px / 1e6
    print(
        f"QC at {params.pixel_um:g} µm/px, {len(stores)} slides of {side_px}² px "
        f"({megapixels:.0f} MP at level 0), best of 3"
    )
    print(
        f"  QC per slide      {np.mean(qc_s):7.3f} s   (read level only: {np.mean(floor_s):.3f} s; "
        f"ratio {np.mean(qc_s) / np.mean(floor_s):.1f}x)"
    )
    print(f"  QC level-0 rate   {megapixels / np.mean(qc_s):7.1f} MP/s of slide per core")


def _bench_explain(base: Path, tiles_n: int) -> None:
    from engine.explain.attribution import explain_tiles
    from engine.models.card import ModelCard
    from engine.models.demo import TinyUNet

    tile_px = 256
    card = ModelCard.model_validate(
        {
            "name": "bench-unet",
            "version": "1",
            "kind": "pixel_segmenter",
            "class_names": ["background", "tumour"],
            "tile_size_px": tile_px,
            "mpp": 1.0,
            "output_stride": 4,
            "output_activation": "softmax",
            "explain_layer": "enc3",
            "normalisation": {"input_scale": "0-1"},
            "description": "Benchmark: demo U-Net architecture, random weights.",
            "training_data": "none",
        }
    )
    torch.manual_seed(0)
    module = TinyUNet(2).eval()
    scripted = torch.jit.script(module)
    batch = torch.export.Dim("batch", min=1, max=256)
    example = torch.rand(2, 3, tile_px, tile_px)
    unflattened = torch.export.unflatten(
        torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    )
    layer = dict(unflattened.named_modules())["enc3"]
    tiles = np.random.default_rng(0).integers(0, 256, (tiles_n, tile_px, tile_px, 3), np.uint8)
    inputs = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255

    def forward() -> None:
        with torch.inference_mode():
            scripted(inputs)

    forward_s = _best_of(3, forward)
    ixg_s = _best_of(3, lambda: explain_tiles(scripted, card, tiles))
    cam_s = _best_of(3, lambda: explain_tiles(unflattened, card, tiles, layer=layer))
    print(
        f"explanations, demo U-Net architecture, {tiles_n} tiles of {tile_px}² px, CPU, best of 3"
    )
    print(f"  forward pass          {forward_s / tiles_n * 1e3:7.1f} ms/tile")
    print(
        f"  input x gradient      {ixg_s / tiles_n * 1e3:7.1f} ms/tile  ({ixg_s / forward_s:.1f}x forward)"
    )
    print(
        f"  Grad-CAM (enc3)       {cam_s / tiles_n * 1e3:7.1f} ms/tile  ({cam_s / forward_s:.1f}x forward)"
    )


def bench_qc(workdir: Path | None, *, quick: bool = False) -> int:
    with tempfile.TemporaryDirectory(prefix="slidefleet-bench-qc-") as tmp:
        base = Path(workdir) if workdir else Path(tmp)
        _bench_qc(base / "qc", 4096 if quick else 16384, 2 if quick else 3)
        _bench_explain(base, 8 if quick else 32)
    return 0
