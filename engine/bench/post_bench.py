"""``slidefleet bench post``: post's throughput and peak memory on 10, 100 and 1000 slides.

Running 1000 slides through ingest and infer would take hours, so the benchmark *synthesises*
fleets directly: per slide a score map of 256–600 px per side at 8 µm (the tile-resolution map a
pixel segmenter writes), a tissue label at 8 µm and a ground-truth annotation at 2 µm, written
with the same code paths as the pipeline (prediction stores through
:func:`engine.infer.prediction_store.finalise`, labels through ingest's label pyramid and NGFF
builders, completion records last). The RGB pyramid of a synthesised slide store is declared
(shape, chunks, NGFF metadata) but holds no chunks: post never reads pixels.

Each measurement runs in a fresh subprocess (``python -m engine.bench.post_bench --worker``) and
samples the RSS of its whole process tree (the driver and every Dask worker) every 50 ms, so the
peak includes the workers. The baseline is a naive loop in one process over the same maps:
read each slide's arrays, threshold at the engine's fitted threshold, scikit-image
``remove_small_objects`` / ``remove_small_holes`` / ``label`` / ``regionprops``, IoU, Dice,
precision, recall, Pearson and scikit-learn's pixel AUC, rows into a pandas frame and a Parquet
file; no calibration sweep, oracle, patch AUC or cohort summary (the engine does those too).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

BENCH_MODEL = "bench-synthetic-scores"
_MPP = 0.5
_MAP_UM = 8.0
_ANNOTATION_UM = 2.0
_SPLITS = ("train", "train", "calibration", "test", "test", "calibration", "train", "train")
_BURDENS = ("macro", "none", "small", "micro")
_SIZES = (10, 100, 1000)
_QUICK_SIZES = (10, 30)


# --- synthesis ------------------------------------------------------------------------------


def _register_bench_model(root: Path) -> Any:
    """A stand-in model (its maps are synthesised, never inferred) so post can resolve a card."""
    import torch
    import torch.nn.functional as F

    from engine.models import ModelCard, ModelRegistry

    class _Darkness(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.avg_pool2d(1.0 - x.mean(dim=1, keepdim=True), 4)

    card = ModelCard.model_validate(
        {
            "name": BENCH_MODEL,
            "version": "1",
            "kind": "pixel_segmenter",
            "class_names": ["tumour"],
            "tile_size_px": 128,
            "mpp": 2.0,
            "overlap_px": 16,
            "output_stride": 4,
            "output_activation": "none",
            "normalisation": {"input_scale": "0-1"},
            "description": "Benchmark stand-in: its score maps are synthesised by engine.bench.post_bench.",
            "training_data": "none: the benchmark writes score maps directly",
        }
    )
    path = root.parent / f"{BENCH_MODEL}.pt"
    torch.jit.script(_Darkness()).save(str(path))
    return ModelRegistry(root).add(path, card)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cell_px: int) -> np.ndarray:
    from scipy import ndimage

    coarse = rng.normal(size=(shape[0] // cell_px + 2, shape[1] // cell_px + 2))
    field = ndimage.zoom(coarse, cell_px, order=3)[: shape[0], : shape[1]]
    return (field - field.mean()) / (field.std() + 1e-9)


def synth_maps(slide_index: int, seed: int) -> dict[str, Any]:
    """One slide's tissue, tumour and score maps at 8 µm (pure; deterministic for a seed)."""
    from scipy import ndimage

    rng = np.random.default_rng([seed, slide_index])
    height, width = (int(v) for v in rng.integers(256, 601, size=2))
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx = height / 2, width / 2
    ellipse = ((yy - cy) / (0.42 * height)) ** 2 + ((xx - cx) / (0.42 * width)) ** 2
    tissue = (ellipse + 0.25 * _smooth_field(rng, (height, width), 48)) < 1.0
    tissue = ndimage.binary_opening(tissue, iterations=2)
    burden = _BURDENS[slide_index % len(_BURDENS)]
    tumour = np.zeros_like(tissue)
    n_blobs, radius = {"none": (0, 0), "micro": (1, 3), "small": (2, 9), "macro": (3, 30)}[burden]
    inside = np.argwhere(ndimage.binary_erosion(tissue, iterations=max(radius, 1)))
    for _ in range(n_blobs if len(inside) else 0):
        y, x = inside[rng.integers(len(inside))]
        r = radius * rng.uniform(0.7, 1.3)
        blob = ((yy - y) / r) ** 2 + ((xx - x) / (r * rng.uniform(0.6, 1.4))) ** 2 < 1.0
        tumour |= blob & tissue
    soft = ndimage.gaussian_filter(tumour.astype(np.float32), 1.5)
    scores = 0.25 + 0.55 * soft + 0.07 * _smooth_field(rng, (height, width), 6)
    scores = np.clip(scores, 0.0, 1.0).astype(np.float32)
    scored = ndimage.binary_dilation(tissue, iterations=8)
    scores[~scored] = np.nan
    return {
        "tissue": tissue,
        "tumour": tumour,
        "scores": scores,
        "burden": burden,
        "split": _SPLITS[slide_index % len(_SPLITS)],
    }


def _write_slide_store(root: Path, slide_id: str, maps: dict[str, Any]) -> Path:
    import zarr

    from engine import __version__
    from engine.ingest.convert import _create_array, _label_levels, _label_pyramid
    from engine.ingest.params import IngestParams
    from engine.store import FleetLayout, atomic_directory, ngff, write_completion

    params = IngestParams()
    layout = FleetLayout(root)
    h8, w8 = maps["tissue"].shape
    per_map_px = int(_MAP_UM / _MPP)
    width_px, height_px = w8 * per_map_px, h8 * per_map_px
    n_levels = 1 + max(0, math.ceil(math.log2(max(width_px, height_px) / params.min_level_px)))
    path = layout.slide_store(slide_id)
    with atomic_directory(path) as tmp:
        image = zarr.open_group(tmp, mode="w", zarr_format=3)
        for level in range(n_levels):  # declared, never written: post reads labels only
            _create_array(
                image,
                str(level),
                (3, math.ceil(height_px / 2**level), math.ceil(width_px / 2**level)),
                params.chunk_px,
                params.zstd_level,
                ("c", "y", "x"),
                255,
            )
        labels = image.create_group("labels")
        for name, mask, um in (
            ("tissue", maps["tissue"], _MAP_UM),
            ("annotation", maps["tumour"], _ANNOTATION_UM),
        ):
            repeat = int(_MAP_UM / um)
            raster = np.repeat(np.repeat(mask.astype(np.uint8), repeat, axis=0), repeat, axis=1)
            group = labels.create_group(name)
            base = _create_array(
                group, "0", raster.shape, params.chunk_px, params.zstd_level, ("y", "x"), 0
            )
            base[:] = raster
            count = _label_pyramid(group, base, params, n_levels)
            ds = um / _MPP
            group.attrs["ome"] = ngff.label_attributes(
                name,
                _label_levels(count, _MPP, _MPP, ds, ds),
                properties={
                    0: {"class": "background"},
                    1: {"class": name if name == "tissue" else "tumour"},
                },
            )
        labels.attrs["ome"] = ngff.labels_group_attributes(["tissue", "annotation"])
        scales = [ngff.level_scale(str(i), _MPP, _MPP, 2.0**i, 2.0**i) for i in range(n_levels)]
        image.attrs["ome"] = ngff.image_attributes(slide_id, scales)
        sha = f"synthetic-{slide_id}"
        image.attrs["slidefleet"] = {
            "engine_version": __version__,
            "slide_id": slide_id,
            "source_path": "synthetic",
            "source_sha256": sha,
            "width_px": width_px,
            "height_px": height_px,
            "mpp_x": _MPP,
            "mpp_y": _MPP,
            "mpp_source": "synthetic",
        }
        write_completion(
            tmp,
            {
                "input_key": {
                    "source_sha256": sha,
                    "params_hash": params.output_hash(),
                    "synthetic": True,
                },
                "result": {
                    "slide_id": slide_id,
                    "split": maps["split"],
                    "label": maps["burden"],
                    "width_px": width_px,
                    "height_px": height_px,
                    "mpp": _MPP,
                },
            },
        )
    return path


def _write_prediction(
    root: Path, slide_id: str, maps: dict[str, Any], model_id: str, ref: str
) -> None:
    import zarr

    from engine import __version__
    from engine.infer.plan import tile_geometry
    from engine.infer.prediction_store import finalise, open_or_create_partial
    from engine.store import FleetLayout

    layout = FleetLayout(root)
    h8, w8 = maps["scores"].shape
    per_map_px = int(_MAP_UM / _MPP)
    geometry = tile_geometry(
        width_px=w8 * per_map_px,
        height_px=h8 * per_map_px,
        mpp_x=_MPP,
        mpp_y=_MPP,
        model_mpp=2.0,
        tile_size_px=128,
        overlap_px=16,
        output_stride=4,
        unit_tiles=8,
    )
    final = layout.prediction_store(model_id, slide_id)
    key = {"slide_sha256": f"synthetic-{slide_id}", "model_id": model_id, "synthetic": True}
    partial, _ = open_or_create_partial(final, key, geometry, ["tumour"])
    array = zarr.open_array(partial / "0", mode="r+")
    array[0, :h8, :w8] = maps["scores"]
    finalise(
        partial,
        final,
        key,
        geometry,
        mpp_x=_MPP,
        mpp_y=_MPP,
        channel_names=["tumour"],
        attributes={
            "slide_id": slide_id,
            "model_id": model_id,
            "model": ref,
            "kind": "pixel_segmenter",
            "class_names": ["tumour"],
            "engine_version": __version__,
            "output_px_um": geometry.model_mpp * geometry.stride_px,
            "synthetic": True,
        },
        result={"slide_id": slide_id, "model_id": model_id, "synthetic": True},
    )


def _synth_one(args: tuple[Path, int, int, str, str]) -> None:
    root, index, seed, model_id, ref = args
    slide_id = f"bench_{index:04d}"
    maps = synth_maps(index, seed)
    _write_slide_store(root, slide_id, maps)
    _write_prediction(root, slide_id, maps, model_id, ref)


def synthesise_fleet(
    root: Path, n_slides: int, *, seed: int = 0, workers: int | None = None
) -> str:
    """Write ``n_slides`` synthetic slide and prediction stores under ``root``; return the model ref."""
    root.mkdir(parents=True, exist_ok=True)
    model = _register_bench_model(root)
    jobs = [(root, i, seed, model.model_id, model.ref) for i in range(n_slides)]
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        list(pool.map(_synth_one, jobs, chunksize=8))
    return model.ref


def _subset(full_root: Path, root: Path, n_slides: int, model_id: str) -> None:
    """A fleet of the first ``n_slides`` of ``full_root`` (copies: stores must live inside root)."""
    shutil.copytree(full_root / "models", root / "models")
    for index in range(n_slides):
        slide_id = f"bench_{index:04d}"
        shutil.copytree(
            full_root / "slides" / f"{slide_id}.ome.zarr", root / "slides" / f"{slide_id}.ome.zarr"
        )
        shutil.copytree(
            full_root / "predictions" / model_id / f"{slide_id}.zarr",
            root / "predictions" / model_id / f"{slide_id}.zarr",
        )


# --- measurement (in a subprocess) ----------------------------------------------------------


class _TreeMonitor:
    """Peak RSS and CPU seconds of this process and its descendants, sampled every 50 ms.

    CPU seconds are summed over every process seen (its last sample), so they include Dask
    workers and, for a Ray started here, Ray's workers and daemons.
    """

    def __init__(self, interval_s: float = 0.05) -> None:
        import psutil

        self._process = psutil.Process()
        self.peak_bytes = 0
        self._cpu: dict[int, float] = {}
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = 0
        for proc in [self._process, *self._process.children(recursive=True)]:
            try:
                with proc.oneshot():
                    total += proc.memory_info().rss
                    times = proc.cpu_times()
                    self._cpu[proc.pid] = times.user + times.system
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._sample())
            self._stop.wait(self._interval)

    @property
    def cpu_seconds(self) -> float:
        return sum(self._cpu.values())

    def __enter__(self) -> _TreeMonitor:
        self._base = self._process.cpu_times()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._sample())
        own = self._process.cpu_times()
        self._cpu[self._process.pid] = (own.user + own.system) - (
            self._base.user + self._base.system
        )


def _naive_loop(root: Path, model_id: str, threshold: float, out: Path) -> int:
    """What one would write without the engine: one slide after another, scikit-image."""
    import warnings

    import pandas as pd
    import zarr
    from skimage import measure, morphology
    from sklearn.metrics import roc_auc_score

    rows: list[dict[str, Any]] = []
    pixel_area_um2 = _MAP_UM * _MAP_UM
    min_px = math.ceil(500.0 / pixel_area_um2)
    hole_px = math.floor(1000.0 / pixel_area_um2)
    for pred_path in sorted((root / "predictions" / model_id).glob("*.zarr")):
        slide_id = pred_path.name.removesuffix(".zarr")
        slide = root / "slides" / f"{slide_id}.ome.zarr"
        scores = np.asarray(zarr.open_array(pred_path / "0", mode="r")[0])
        tissue = np.asarray(zarr.open_array(slide / "labels" / "tissue" / "0", mode="r")[:]) > 0
        truth = np.asarray(zarr.open_array(slide / "labels" / "annotation" / "2", mode="r")[:]) > 0
        h, w = (
            min(a, b, c) for a, b, c in zip(scores.shape, tissue.shape, truth.shape, strict=True)
        )
        scores, tissue, truth = scores[:h, :w], tissue[:h, :w], truth[:h, :w]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mask = (np.nan_to_num(scores, nan=-1.0) >= threshold) & tissue
            mask = morphology.remove_small_objects(mask, min_size=min_px, connectivity=2)
            mask = morphology.remove_small_holes(mask, area_threshold=hole_px + 1)
        labels = measure.label(mask, connectivity=2)
        props = measure.regionprops(labels, intensity_image=np.nan_to_num(scores))
        regions = [(p.area, p.centroid, p.bbox, p.intensity_mean, p.intensity_max) for p in props]
        t, p = truth[tissue], mask[tissue]
        tp, fp, fn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
        s = np.nan_to_num(scores[tissue])
        auc = roc_auc_score(t, s) if 0 < t.sum() < t.size else None
        pearson = float(np.corrcoef(s, t)[0, 1]) if 0 < t.sum() < t.size else None
        rows.append(
            {
                "slide_id": slide_id,
                "tumour_px": int(p.sum()),
                "tissue_px": int(tissue.sum()),
                "n_regions": len(regions),
                "largest_px": max((r[0] for r in regions), default=0),
                "iou": tp / (tp + fp + fn) if tp + fp + fn else None,
                "dice": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
                "precision": tp / (tp + fp) if tp + fp else None,
                "recall": tp / (tp + fn) if tp + fn else None,
                "pearson": pearson,
                "pixel_auc": auc,
            }
        )
    pd.DataFrame(rows).to_parquet(out)
    return len(rows)


def _worker(mode: str, root: Path, model: str, extra: str) -> dict[str, Any]:
    import logging

    logging.basicConfig(level=logging.WARNING)
    with _TreeMonitor() as monitor:
        started = time.perf_counter()
        if mode == "engine":
            from engine.post.cohort import post
            from engine.post.params import PostExecution, PostParams

            ray_start_s = 0.0
            if extra == "ray":  # a Ray cluster the driver starts, as `slidefleet` would
                from engine.cluster import ensure_ray

                ensure_ray(num_cpus=os.cpu_count())
                ray_start_s = time.perf_counter() - started
            params = PostParams(execution=PostExecution.model_validate({"scheduler": extra}))
            report = post(root, model, params=params, progress=False, force=True)
            seconds = time.perf_counter() - started
            result = {
                "slides": report.slides.num_rows,
                "failures": len(report.failures),
                "threshold": report.threshold,
                "scheduler": report.scheduler,
                "timings": {**report.timings, "ray_start_s": ray_start_s},
            }
        else:
            import pandas  # noqa: F401  (imports are not the loop's work)
            import skimage.measure  # noqa: F401
            import skimage.morphology  # noqa: F401
            import sklearn.metrics  # noqa: F401
            import zarr  # noqa: F401

            from engine.models import ModelRegistry

            model_id = ModelRegistry(root).resolve(model).model_id
            started = time.perf_counter()
            slides = _naive_loop(root, model_id, float(extra), root / "naive.parquet")
            seconds = time.perf_counter() - started
            result = {"slides": slides}
    return {
        **result,
        "mode": mode,
        "seconds": seconds,
        "peak_rss_mib": monitor.peak_bytes / 2**20,
        "cpu_seconds": monitor.cpu_seconds,
        "load_1min": os.getloadavg()[0],
    }


def _measure(mode: str, root: Path, model: str, extra: str) -> dict[str, Any]:
    output = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.bench.post_bench",
            "--worker",
            mode,
            str(root),
            model,
            extra,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def _work_s(engine: dict[str, Any]) -> float:
    t = engine["timings"]
    return float(t["fit_s"] + t["slides_s"] + t["write_s"])


def bench_post(
    workdir: Path | None,
    *,
    quick: bool = False,
    sizes: Sequence[int] | None = None,
    scheduler: str = "processes",
    repeats: int = 1,
) -> int:
    """Generate fleets, run post and the naive loop on each, print the table; returns 0.

    With ``repeats > 1`` each measurement is the fastest of that many (shared machines are
    noisy; the fastest run is the one least disturbed). Fleets already in ``workdir`` are reused.
    """
    sizes = tuple(sizes or (_QUICK_SIZES if quick else _SIZES))
    with tempfile.TemporaryDirectory(prefix="slidefleet-bench-post-") as tmp:
        base = Path(workdir) if workdir else Path(tmp)
        started = time.perf_counter()
        full = base / f"fleet_{max(sizes)}" / "root"
        done = full / "predictions"
        if done.is_dir() and sum(1 for _ in done.glob("*/bench_*.zarr")) == max(sizes):
            from engine.models import ModelRegistry

            model = ModelRegistry(full).resolve(BENCH_MODEL).ref
            made = f"reused from {base}"
        else:
            model = synthesise_fleet(full, max(sizes))
            made = f"written in {time.perf_counter() - started:.0f} s"
        from engine.models import ModelRegistry

        model_id = ModelRegistry(full).resolve(model).model_id
        rows = []
        for n in sizes:
            root = full if n == max(sizes) else base / f"fleet_{n}" / "root"
            if n != max(sizes) and not root.exists():
                _subset(full, root, n, model_id)
            engine = min(
                (_measure("engine", root, model, scheduler) for _ in range(repeats)), key=_work_s
            )
            naive = min(
                (_measure("naive", root, model, str(engine["threshold"])) for _ in range(repeats)),
                key=lambda m: float(m["seconds"]),
            )
            rows.append((n, engine, naive))

    print(
        f"slidefleet bench post: SYNTHESISED fleets (prediction and slide stores written directly, "
        f"not ingest+infer) of {', '.join(map(str, sizes))} slides: score maps 256-600 px per side "
        f"at 8 µm, tissue label at 8 µm, ground truth at 2 µm ({made})."
    )
    print(
        f"engine: post() on {rows[0][1]['scheduler']} ({os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}, fastest of {repeats}); naive: one process, "
        "scikit-image per slide. setup = model lookup + slide listing + cluster start (workers "
        "warmed up); work = pass 1 + pass 2 + tables; peak = RSS of the whole process tree."
    )
    print(
        f"{'slides':>6s} {'total s':>8s} {'setup s':>8s} {'work s':>7s} {'slides/s':>9s} "
        f"{'ms/slide':>9s} {'peak MiB':>9s} | {'naive s':>8s} {'slides/s':>9s} {'peak MiB':>9s} | "
        f"{'speed-up':>8s}"
    )
    for n, engine, naive in rows:
        work = _work_s(engine)
        setup = engine["seconds"] - work
        print(
            f"{n:6d} {engine['seconds']:8.2f} {setup:8.2f} {work:7.2f} {n / work:9.1f} "
            f"{1000 * work / n:9.1f} {engine['peak_rss_mib']:9.0f} | {naive['seconds']:8.2f} "
            f"{n / naive['seconds']:9.1f} {naive['peak_rss_mib']:9.0f} | "
            f"{naive['seconds'] / work:8.2f}"
        )
    (n0, e0, _), (n1, e1, _) = rows[-2] if len(rows) > 1 else rows[0], rows[-1]
    if n1 > n0:
        marginal = 1000 * (_work_s(e1) - _work_s(e0)) / (n1 - n0)
        print(
            f"marginal time per slide from {n0} to {n1} slides: {marginal:.1f} ms "
            f"(vs {1000 * _work_s(e0) / n0:.1f} ms/slide at {n0}: linear when these agree); "
            f"peak memory {n1} / {rows[0][0]} slides: "
            f"{e1['peak_rss_mib'] / rows[0][1]['peak_rss_mib']:.2f}x (1.00 = flat)"
        )
    print(
        "speed-up = naive s / engine work s (the naive loop reads, thresholds, cleans, labels and "
        "scores; the engine also sweeps the calibration split, fits thresholds, computes oracle "
        "thresholds, patch AUC and the cohort summary, and validates and writes four tables)"
    )
    return 0


def compare_schedulers(workdir: Path | None, *, n_slides: int = 100, repeats: int = 3) -> int:
    """Run post on one synthesised fleet with each scheduler, interleaved; print the figures."""
    schedulers = ("sync", "threads", "processes", "ray")
    with tempfile.TemporaryDirectory(prefix="slidefleet-bench-post-") as tmp:
        root = (Path(workdir) if workdir else Path(tmp)) / f"fleet_{n_slides}" / "root"
        model = synthesise_fleet(root, n_slides)
        runs: dict[str, list[dict[str, Any]]] = {s: [] for s in schedulers}
        for _ in range(repeats):
            for scheduler in schedulers:
                runs[scheduler].append(_measure("engine", root, model, scheduler))
    print(
        f"post on {n_slides} synthesised slides, {os.cpu_count()} CPUs, {repeats} interleaved runs "
        "each (median; a fresh process and cluster per run)"
    )
    print(
        f"{'scheduler':>10s} {'wall s':>7s} {'start s':>8s} {'fit+slides s':>13s} {'ms/slide':>9s} "
        f"{'CPU s':>6s} {'peak MiB':>9s} {'load':>5s}"
    )
    for scheduler, measured in runs.items():

        def med(values: list[float]) -> float:
            return float(np.median(values))

        start = med(
            [
                m["timings"].get("cluster_start_s", 0) + m["timings"].get("ray_start_s", 0)
                for m in measured
            ]
        )
        work = med([m["timings"]["fit_s"] + m["timings"]["slides_s"] for m in measured])
        print(
            f"{scheduler:>10s} {med([m['seconds'] for m in measured]):7.2f} {start:8.2f} {work:13.2f} "
            f"{1000 * work / n_slides:9.1f} {med([m['cpu_seconds'] for m in measured]):6.1f} "
            f"{med([m['peak_rss_mib'] for m in measured]):9.0f} {med([m['load_1min'] for m in measured]):5.1f}"
        )
    for scheduler in schedulers:
        print(f"  {scheduler}: {runs[scheduler][0]['scheduler']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 and 30 slides")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="cohort sizes")
    parser.add_argument("--repeats", type=int, default=1, help="fastest of N runs per measurement")
    parser.add_argument(
        "--workdir", default=None, help="keep the fleets here (default: a temp dir)"
    )
    parser.add_argument(
        "--scheduler",
        default="processes",
        choices=["auto", "processes", "threads", "ray", "sync"],
        help="post's scheduler; one for every size, so sizes compare (default: processes)",
    )
    parser.add_argument(
        "--compare-schedulers",
        type=int,
        default=None,
        metavar="N",
        help="time post with each scheduler on N synthesised slides instead",
    )
    parser.add_argument(
        "--worker", nargs=4, metavar=("MODE", "ROOT", "MODEL", "EXTRA"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.worker:
        mode, root, model, extra = args.worker
        print(json.dumps(_worker(mode, Path(root), model, extra)))
        return 0
    if args.compare_schedulers:
        return compare_schedulers(
            Path(args.workdir) if args.workdir else None, n_slides=args.compare_schedulers
        )
    return bench_post(
        Path(args.workdir) if args.workdir else None,
        quick=args.quick,
        sizes=args.sizes,
        repeats=args.repeats,
        scheduler=args.scheduler,
    )


if __name__ == "__main__":
    raise SystemExit(main())
