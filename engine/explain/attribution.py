"""Attribution maps for tiles: which pixels drove a model's score for one class.

The explained quantity is a tile's mean score of the target class over its kept (central) region,
exactly what the score map holds for that tile. Two methods, both from Captum:

- **Grad-CAM** (Selvaraju et al. 2017) on the layer the model card names (``explain_layer``):
  class-discriminative and smooth; needs forward hooks, which torch.export programs allow once
  unflattened and TorchScript modules do not.
- **Input x gradient** otherwise: works on any differentiable model file, TorchScript included;
  its per-pixel map is the positive part of input x gradient summed over the colour channels
  (a pixel's first-order contribution *for* the class; channels are summed before the sign is
  taken, since on neutral pixels their contributions cancel), smoothed by a Gaussian of
  ``smooth_um`` so that it reads at tissue scale rather than pixel noise.

Maps are (N, H, W) float32 in [0, 1], normalised per tile (each tile's maximum is 1), at the
tile's own pixels. Pure torch + Captum; no Ray or zarr.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from captum.attr import InputXGradient, LayerAttribution, LayerGradCam
from numpy.typing import NDArray
from scipy import ndimage

from engine.models.adapters import adapter_for, crop_overlap, normalise
from engine.models.card import ModelCard

ExplainMethod = Literal["grad_cam", "input_x_gradient"]


@dataclass(frozen=True)
class TileExplanations:
    """Attribution maps for a batch of tiles and how they were made."""

    maps: NDArray[np.float32]  # (N, H, W) in [0, 1]
    scores: NDArray[np.float32]  # (N,) the explained quantity: mean target-class score per tile
    method: ExplainMethod
    target_class: int
    note: str  # why this method (e.g. "TorchScript modules cannot be hooked")


def tile_objective(
    module: torch.nn.Module, card: ModelCard, target_class: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Normalised float tiles (N, 3, H, W) -> (N,) mean score of ``target_class`` per tile."""
    adapter = adapter_for(card)

    def objective(x: torch.Tensor) -> torch.Tensor:
        scores = crop_overlap(adapter(module(x), x.shape[0]), card)
        return scores[:, target_class].mean(dim=(1, 2))

    return objective


def _normalise_maps(maps: NDArray[np.float64]) -> NDArray[np.float32]:
    peak = maps.reshape(maps.shape[0], -1).max(axis=1)
    peak[peak <= 0] = 1.0
    return (maps / peak[:, None, None]).astype(np.float32)


def explain_tiles(
    module: torch.nn.Module,
    card: ModelCard,
    tiles: NDArray[np.uint8],
    *,
    target_class: int | None = None,
    layer: torch.nn.Module | None = None,
    note: str = "",
    smooth_um: float = 4.0,
) -> TileExplanations:
    """Attribution maps of ``tiles`` (N, H, W, 3 uint8) for ``target_class`` (default: positive).

    With ``layer``, Grad-CAM (one tile per call, since exported programs fix their batch size),
    upsampled bilinearly to the tile; without, input x gradient.
    """
    target = card.positive_class_index if target_class is None else target_class
    if not 0 <= target < card.num_channels:
        raise ValueError(f"target_class {target} is not a class of {card.ref}")
    objective = tile_objective(module, card, target)
    inputs = normalise(torch.from_numpy(np.ascontiguousarray(tiles)), card)
    height, width = inputs.shape[-2:]
    with torch.no_grad():
        scores = torch.cat([objective(inputs[i : i + 1]) for i in range(inputs.shape[0])])
    if layer is not None:
        grad_cam = LayerGradCam(objective, layer)
        maps = []
        for i in range(inputs.shape[0]):
            one = inputs[i : i + 1].clone().requires_grad_(True)
            cam = grad_cam.attribute(one, relu_attributions=True)
            cam = LayerAttribution.interpolate(cam, (height, width), interpolate_mode="bilinear")
            maps.append(cam.detach()[0, 0].clamp_min(0).double().numpy())
        return TileExplanations(
            _normalise_maps(np.stack(maps)),
            scores.numpy().astype(np.float32),
            "grad_cam",
            target,
            note or f"Grad-CAM on layer {card.explain_layer!r}",
        )
    attributions = InputXGradient(objective).attribute(inputs.clone().requires_grad_(True))
    saliency = attributions.detach().sum(dim=1).clamp_min(0).double().numpy()
    sigma_px = smooth_um / card.mpp
    if sigma_px > 0:
        saliency = np.stack([ndimage.gaussian_filter(m, sigma_px) for m in saliency])
    return TileExplanations(
        _normalise_maps(saliency),
        scores.numpy().astype(np.float32),
        "input_x_gradient",
        target,
        note or "input x gradient",
    )
