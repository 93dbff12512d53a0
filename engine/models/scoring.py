"""A loaded model with its card: uint8 tiles in, validated and cropped score maps out.

This is the whole per-batch path a GPU actor runs (``__init__`` loads once, ``__call__`` per
batch); test-time augmentation, fusion and mixed precision are the inference stage's business.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

from engine.models.adapters import adapter_for, crop_overlap, normalise
from engine.models.card import ModelCard
from engine.models.loading import load_model
from engine.models.registry import RegisteredModel


class ScoringModel:
    """``scores = ScoringModel.from_registered(m, device)(tiles_uint8_nhwc)``."""

    def __init__(
        self,
        module: torch.nn.Module,
        card: ModelCard,
        *,
        model_id: str,
        device: str | torch.device = "cpu",
    ) -> None:
        self.module = module
        self.card = card
        self.model_id = model_id
        self.device = torch.device(device)
        self.adapter = adapter_for(card)

    @classmethod
    def from_registered(
        cls, registered: RegisteredModel, device: str | torch.device = "cpu"
    ) -> ScoringModel:
        """Load a registered model onto ``device``."""
        module = load_model(registered.path, device=device)
        return cls(module, registered.card, model_id=registered.model_id, device=device)

    def raw_scores(self, tiles: torch.Tensor | NDArray[np.uint8]) -> torch.Tensor:
        """Validated scores for whole tiles: (N, C, s, s), see :mod:`engine.models.adapters`."""
        batch = (
            torch.from_numpy(np.ascontiguousarray(tiles))
            if isinstance(tiles, np.ndarray)
            else tiles
        )
        batch = normalise(batch.to(self.device, non_blocking=True), self.card)
        with torch.inference_mode():
            raw = self.module(batch)
        return self.adapter(raw, batch.shape[0])

    def __call__(self, tiles: torch.Tensor | NDArray[np.uint8]) -> torch.Tensor:
        """Scores for each tile's kept (central ``step_px``) region: (N, C, k, k)."""
        return crop_overlap(self.raw_scores(tiles), self.card)
