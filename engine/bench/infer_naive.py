"""The naive loop of ``bench infer``, in its own process for a clean peak-RSS figure."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.infer.driver import _plan_slide
from engine.infer.params import InferParams
from engine.manifest import read_manifest
from engine.models import ModelRegistry, ScoringModel
from engine.slides import open_slide
from engine.store import FleetLayout
from engine.store.slide_store import SlideStore


def main() -> None:
    root, manifest, batch_size = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    registered = ModelRegistry(root).resolve("demo-unet-tumour")
    model = ScoringModel.from_registered(registered)
    card = registered.card
    layout = FleetLayout(root)
    tiles_done, started = 0, time.perf_counter()
    for entry in read_manifest(manifest).entries:
        store = SlideStore.open(layout.slide_store(entry.slide_id))
        geometry, units = _plan_slide(store, registered, InferParams())
        positions = [
            (u.row0 + r, u.col0 + c)
            for u in units
            for r in range(u.rows)
            for c in range(u.cols)
            if u.tile_mask[r][c]
        ]
        with open_slide(entry.path) as slide:
            factor = card.mpp / slide.info.mpp
            level = slide.info.best_level_for_downsample(factor)
            level_ds = slide.info.level_downsamples[level]
            read_px = round(card.tile_size_px * factor / level_ds)
            batch: list[np.ndarray] = []
            for index, (row, col) in enumerate(positions):
                x0 = round((col * geometry.step_px - geometry.crop_px) * factor)
                y0 = round((row * geometry.step_px - geometry.crop_px) * factor)
                region = slide.read_region_rgb(x0, y0, level, read_px, read_px)
                if read_px != card.tile_size_px:
                    region = np.asarray(
                        Image.fromarray(region).resize((card.tile_size_px,) * 2, Image.BILINEAR)
                    )
                batch.append(region)
                if len(batch) == batch_size or index == len(positions) - 1:
                    with torch.inference_mode():
                        model(np.stack(batch))
                    tiles_done += len(batch)
                    batch = []
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "tiles": tiles_done,
                "seconds": seconds,
                "tiles_per_s": tiles_done / seconds,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
