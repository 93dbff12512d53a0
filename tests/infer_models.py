"""Tiny real TorchScript models for inference tests (no training: fixed, inspectable maths)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from engine.models import ModelCard, ModelRegistry, RegisteredModel


class Darkness(torch.nn.Module):
    """Per-pixel darkness (1 - mean RGB in 0-1), average-pooled by the output stride (4)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(1.0 - x.mean(dim=1, keepdim=True), 4)


class NanOnDarkTiles(torch.nn.Module):
    """Darkness, but NaN for a whole tile whose darkest output pixel exceeds ``limit``."""

    def __init__(self, limit: float) -> None:
        super().__init__()
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = F.avg_pool2d(1.0 - x.mean(dim=1, keepdim=True), 4)
        peak = d.amax(dim=(1, 2, 3), keepdim=True)
        return torch.where(peak > self.limit, torch.full_like(d, float("nan")), d)


class DarkPatch(torch.nn.Module):
    """A fixed patch classifier: P(dark) = mean darkness of the tile, P(light) = 1 - that."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dark = 1.0 - x.mean(dim=(1, 2, 3))
        return torch.stack([1.0 - dark, dark], 1)


class WrongShape(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x[:, :1], 5)


def darkness_card(name: str, version: str = "1") -> ModelCard:
    return ModelCard.model_validate(
        {
            "name": name,
            "version": version,
            "kind": "pixel_segmenter",
            "class_names": ["dark"],
            "tile_size_px": 128,
            "mpp": 2.0,
            "overlap_px": 16,
            "output_stride": 4,
            "output_activation": "none",
            "normalisation": {"input_scale": "0-1"},
            "description": "Test model: mean darkness per 8 µm output pixel (no learned weights).",
            "training_data": "none: fixed arithmetic for tests",
        }
    )


def register(
    root: Path, module: torch.nn.Module, card: ModelCard, *, check_output: bool = True
) -> RegisteredModel:
    path = root.parent / f"{card.name}-{card.version}.pt"
    torch.jit.script(module).save(str(path))
    return ModelRegistry(root).add(path, card, check_output=check_output)
