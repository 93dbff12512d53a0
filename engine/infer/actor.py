"""The scoring actor: loads a model once, then scores work units and writes their chunks.

An actor is pinned to one GPU (``num_gpus=1`` or a fraction) or runs on CPUs. It is a threaded
actor: up to ``reader_threads`` units read and decode their tiles concurrently while one holds the
model, so reading overlaps compute. The model's busy time is measured for the utilisation report.
"""

from __future__ import annotations

import os
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import zarr

from engine.errors import ModelOutputInvalid
from engine.features.store import write_feature_unit
from engine.infer.params import InferParams
from engine.infer.plan import TileGeometry, WorkUnit, unit_input_window
from engine.infer.reading import cut_tiles, read_model_window, source_level
from engine.infer.tta import with_tta
from engine.models import ModelCard, adapter_for, crop_overlap, load_model, normalise
from engine.store.slide_store import SlideStore


@dataclass(frozen=True)
class UnitJob:
    """Everything an actor needs to score one unit (small: sent with every call)."""

    unit: WorkUnit
    geometry: TileGeometry
    slide_store_path: str
    output_array_path: str


@dataclass(frozen=True)
class UnitStats:
    unit_key: str
    slide_id: str
    tiles: int
    read_seconds: float
    model_seconds: float
    wall_seconds: float
    actor_pid: int


def _set_cpu_threads(n_threads: int) -> int:
    torch.set_num_threads(max(1, n_threads))
    return int(torch.get_num_threads())


class ScoringActor:
    def __init__(self, model_path: str, card_json: str, model_id: str, params_json: str) -> None:
        import ray

        self.card = ModelCard.model_validate_json(card_json)
        self.params = InferParams.model_validate_json(params_json)
        self.model_id = model_id
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        self.node_id = ray.get_runtime_context().get_node_id()
        use_cuda = bool(self.gpu_ids) and torch.cuda.is_available()
        self.device = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
        if not use_cuda:
            torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        self.module = load_model(model_path, device=self.device)
        self.module.eval()
        if use_cuda and self.params.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.adapter = adapter_for(self.card)
        # Every forward pass runs on this one thread. A threaded actor's reader threads would each
        # get their own malloc arena for the activations otherwise: measured on a ResNet-18 at
        # batch 32 on CPU, three calling threads held 1,020 MiB peak / 713 MiB after, one 604 / 432.
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._stores: dict[str, SlideStore] = {}
        self._outputs: dict[str, zarr.Array] = {}
        self._busy_seconds = 0.0
        self._first_start: float | None = None
        self._last_end: float | None = None
        self._units = 0
        self._tiles = 0

    def use_cpu_threads(self, n_threads: int) -> int:
        """From now on run the model on ``n_threads`` CPU threads (CPU actors only; 0 on a GPU).

        Set on the model thread itself: OpenMP's thread count belongs to the calling thread.
        """
        if self.device.type != "cpu":
            return 0
        return self._model_thread.submit(_set_cpu_threads, n_threads).result()

    # -- introspection -------------------------------------------------------------------
    def placement(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "node_id": self.node_id,
            "gpu_ids": self.gpu_ids,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "device": str(self.device),
            "cuda_device_name": torch.cuda.get_device_name(0)
            if self.device.type == "cuda"
            else None,
        }

    def stats(self) -> dict[str, Any]:
        wall = (self._last_end - self._first_start) if self._first_start and self._last_end else 0.0
        return {
            **self.placement(),
            "units": self._units,
            "tiles": self._tiles,
            "model_busy_seconds": self._busy_seconds,
            "cpu_threads": self._model_thread.submit(torch.get_num_threads).result()
            if self.device.type == "cpu"
            else None,
            "wall_seconds": wall,
            "model_busy_fraction": self._busy_seconds / wall if wall > 0 else None,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }

    # -- scoring ------------------------------------------------------------------------
    def _store(self, path: str) -> SlideStore:
        if path not in self._stores:
            self._stores[path] = SlideStore.open(path)
        return self._stores[path]

    def _output(self, path: str) -> zarr.Array:
        if path not in self._outputs:
            self._outputs[path] = zarr.open_array(path, mode="r+")
        return self._outputs[path]

    def _forward(self, tiles_uint8: np.ndarray) -> torch.Tensor:
        """Scores (N, C, k, k) on the CPU for uint8 NHWC tiles, batch by batch."""
        outputs = []
        for start in range(0, len(tiles_uint8), self.params.batch_size):
            batch = torch.from_numpy(tiles_uint8[start : start + self.params.batch_size]).to(
                self.device
            )
            x = normalise(batch, self.card)
            if self.device.type == "cuda" and self.params.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)

            def score(t: torch.Tensor) -> torch.Tensor:
                with (
                    torch.inference_mode(),
                    torch.autocast(
                        device_type=self.device.type,
                        dtype=torch.bfloat16,
                        enabled=self.device.type == "cuda" and self.params.mixed_precision,
                    ),
                ):
                    raw = self.module(t)
                if isinstance(raw, torch.Tensor):
                    raw = raw.float()
                return self.adapter(raw, t.shape[0])

            outputs.append(
                crop_overlap(with_tta(score, x, self.params.tta), self.card).float().cpu()
            )
        return torch.cat(outputs)

    def _coarse_scores(
        self, store: SlideStore, job: UnitJob, positions: list[tuple[int, int]]
    ) -> torch.Tensor:
        """Scores of the same tiles at ``mpp_factor`` x coarser, mapped onto the fine output grid."""
        assert self.params.fusion is not None
        g, unit, m = job.geometry, job.unit, self.params.fusion.mpp_factor
        coarse_mpp = g.level0_per_model_px_x * store.mpp_x * m
        coarse_f = (g.level0_per_model_px_x * m, g.level0_per_model_px_y * m)
        size = g.tile_size_px
        centres = [
            ((unit.row0 + r + 0.5) * g.step_px / m, (unit.col0 + c + 0.5) * g.step_px / m)
            for r, c in positions
        ]
        origins = [(round(cy - size / 2), round(cx - size / 2)) for cy, cx in centres]
        y0 = min(o[0] for o in origins)
        x0 = min(o[1] for o in origins)
        y1 = max(o[0] for o in origins) + size
        x1 = max(o[1] for o in origins) + size
        window = read_model_window(
            store, source_level(store, coarse_mpp), coarse_f, (x0, y0, x1 - x0, y1 - y0)
        )
        tiles = cut_tiles(window, size, [(oy - y0, ox - x0) for oy, ox in origins])
        coarse, _ = self._forward_locked(tiles)
        k = g.out_per_tile_px
        if k == 1:
            return coarse
        up = torch.nn.functional.interpolate(
            coarse, scale_factor=m, mode="bilinear", align_corners=False
        )
        offset = (up.shape[-1] - k) // 2
        return up[..., offset : offset + k, offset : offset + k]

    def _forward_locked(self, tiles: np.ndarray) -> tuple[torch.Tensor, float]:
        """Scores and the seconds the model was held; only the model thread runs the model."""
        return self._model_thread.submit(self._timed_forward, tiles).result()

    def _timed_forward(self, tiles: np.ndarray) -> tuple[torch.Tensor, float]:
        started = time.perf_counter()
        try:
            return self._forward(tiles), time.perf_counter() - started
        finally:
            ended = time.perf_counter()
            self._busy_seconds += ended - started
            self._last_end = ended

    def score_unit(self, job: UnitJob) -> UnitStats:
        started = time.perf_counter()
        self._first_start = self._first_start or started
        store = self._store(job.slide_store_path)
        g, unit = job.geometry, job.unit
        positions = [
            (r, c) for r in range(unit.rows) for c in range(unit.cols) if unit.tile_mask[r][c]
        ]
        level = (
            source_level(store, g.model_mpp)
            if g.source_level is None
            else store.level(g.source_level)
        )
        f = (g.level0_per_model_px_x, g.level0_per_model_px_y)
        window = read_model_window(store, level, f, unit_input_window(g, unit))
        tiles = cut_tiles(
            window, g.tile_size_px, [(r * g.step_px, c * g.step_px) for r, c in positions]
        )
        read_seconds = time.perf_counter() - started
        scores, model_seconds = self._forward_locked(tiles)
        if self.params.fusion is not None:
            w_fine, w_coarse = self.params.fusion.weights
            scores = w_fine * scores + w_coarse * self._coarse_scores(store, job, positions)
        if not torch.isfinite(scores).all():
            raise ModelOutputInvalid(
                f"model {self.card.name}:{self.card.version} produced non-finite scores on slide {unit.slide_id}"
            )
        if self.card.is_extractor:
            write_feature_unit(job.output_array_path, unit, positions, scores[:, :, 0, 0].numpy())
            return self._unit_done(started, unit, positions, read_seconds, model_seconds)
        k = g.out_per_tile_px
        block = np.full((scores.shape[1], unit.rows * k, unit.cols * k), np.nan, np.float32)
        values = scores.numpy()
        for index, (r, c) in enumerate(positions):
            block[:, r * k : (r + 1) * k, c * k : (c + 1) * k] = values[index]
        output = self._output(job.output_array_path)
        y0, x0 = unit.row0 * k, unit.col0 * k
        output[:, y0 : y0 + block.shape[1], x0 : x0 + block.shape[2]] = block
        return self._unit_done(started, unit, positions, read_seconds, model_seconds)

    def _unit_done(
        self,
        started: float,
        unit: WorkUnit,
        positions: list[tuple[int, int]],
        read_seconds: float,
        model_seconds: float,
    ) -> UnitStats:
        ended = time.perf_counter()
        self._last_end = ended
        self._units += 1
        self._tiles += len(positions)
        return UnitStats(
            unit.key,
            unit.slide_id,
            len(positions),
            read_seconds,
            model_seconds,
            ended - started,
            os.getpid(),
        )
