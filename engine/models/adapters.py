"""Input normalisation and one output adapter per model kind.

``normalise`` turns a uint8 NHWC batch of tiles into the float NCHW tensor a model expects; an
adapter turns the model's raw output into the score map the engine writes, validating it first:

* ``pixel_segmenter``  -> (N, C, s, s) per-class probabilities, ``s = tile_size_px / output_stride``
* ``patch_classifier`` -> (N, C, 1, 1) per-class probabilities
* ``anomaly_scorer``   -> (N, 1, s, s) or (N, 1, 1, 1) scores (the file returns the score itself)
* ``embedding_extractor`` -> (N, D, 1, 1) features (a (N, D, h, w) map is averaged over h, w)

``crop_overlap`` then keeps each tile's central ``step_px`` region. Pure torch: no Ray, no zarr.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from numpy.typing import NDArray

from engine.errors import ModelOutputInvalid
from engine.models.card import ModelCard, ModelKind, Normalisation


def normalise(
    batch: torch.Tensor | NDArray[np.uint8],
    card: ModelCard | Normalisation,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB tiles -> normalised float (N, 3, H, W), on the input's device.

    Move the uint8 batch to the GPU before calling this: it is 4x smaller than the float one.
    """
    tensor = (
        torch.from_numpy(np.ascontiguousarray(batch)) if isinstance(batch, np.ndarray) else batch
    )
    if tensor.dtype != torch.uint8 or tensor.ndim != 4 or tensor.shape[-1] != 3:
        raise ValueError(
            f"normalise expects uint8 tiles shaped (N, H, W, 3), got {tuple(tensor.shape)} "
            f"{tensor.dtype}"
        )
    spec = card.normalisation if isinstance(card, ModelCard) else card
    x = tensor.permute(0, 3, 1, 2).to(dtype)
    if spec.channel_order == "BGR":
        x = x.flip(1)
    if spec.input_scale == "0-1":
        x = x / 255.0
    mean = torch.tensor(spec.mean, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


class OutputAdapter:
    """Turns a model's raw output on a batch of ``batch_size`` tiles into validated scores."""

    kind: ClassVar[ModelKind]

    def __init__(self, card: ModelCard) -> None:
        if card.kind != self.kind:
            raise ValueError(
                f"{type(self).__name__} handles {self.kind!r}, card {card.ref} is {card.kind!r}"
            )
        self.card = card

    def __call__(self, raw: object, batch_size: int) -> torch.Tensor:
        if not isinstance(raw, torch.Tensor):
            raise ModelOutputInvalid(
                f"model {self.card.ref} returned {type(raw).__name__}, expected a single tensor"
            )
        scores = self._reshape(raw.float(), batch_size)
        _check_finite(scores, self.card, "raw output")
        scores = self._activate(scores)
        return scores.contiguous()

    def expected_shape(self, batch_size: int) -> tuple[int, int, int, int]:
        """Shape of the adapted output for ``batch_size`` tiles."""
        side = self.card.output_size
        return (batch_size, self.card.num_channels, side, side)

    def _reshape(self, raw: torch.Tensor, batch_size: int) -> torch.Tensor:
        expected = self.expected_shape(batch_size)
        if tuple(raw.shape) != expected:
            raise _shape_error(self.card, expected, raw, "")
        return raw

    def _activate(self, scores: torch.Tensor) -> torch.Tensor:
        activation = self.card.output_activation
        if activation == "softmax":
            return torch.softmax(scores, dim=1)
        if activation == "sigmoid":
            return torch.sigmoid(scores)
        return scores


class PixelSegmenterAdapter(OutputAdapter):
    """Per-pixel logits or probabilities -> per-class probabilities (N, C, s, s)."""

    kind = "pixel_segmenter"


class PatchClassifierAdapter(OutputAdapter):
    """(N, C), (N, C, 1, 1) or, for one class, (N,) -> probabilities (N, C, 1, 1).

    WSInfer models return (N, C), so that form is accepted as it is.
    """

    kind = "patch_classifier"

    def _reshape(self, raw: torch.Tensor, batch_size: int) -> torch.Tensor:
        expected = self.expected_shape(batch_size)
        channels = self.card.num_channels
        accepted: set[tuple[int, ...]] = {(batch_size, channels), expected}
        if channels == 1:
            accepted.add((batch_size,))
        if tuple(raw.shape) not in accepted:
            raise _shape_error(self.card, expected, raw, f" (or ({batch_size}, {channels}))")
        return raw.reshape(expected)


class AnomalyScorerAdapter(OutputAdapter):
    """Scores returned by the file itself -> (N, 1, s, s), or (N, 1, 1, 1) per tile.

    A per-tile scorer may also return (N,) or (N, 1). No activation: output_activation is 'none'.
    """

    kind = "anomaly_scorer"

    def _reshape(self, raw: torch.Tensor, batch_size: int) -> torch.Tensor:
        expected = self.expected_shape(batch_size)
        accepted: set[tuple[int, ...]] = {expected}
        if not self.card.is_dense:
            accepted |= {(batch_size,), (batch_size, 1)}
        if tuple(raw.shape) not in accepted:
            extra = "" if self.card.is_dense else f" (or ({batch_size},) / ({batch_size}, 1))"
            raise _shape_error(self.card, expected, raw, extra)
        return raw.reshape(expected)


class EmbeddingExtractorAdapter(OutputAdapter):
    """(N, D), (N, D, 1, 1) or a feature map (N, D, h, w) -> features (N, D, 1, 1).

    A backbone with its classifier removed returns (N, D) (torchvision's ResNet with
    ``fc = Identity``) or its last feature map (timm's ``forward_features``); the map is
    global-average pooled, as those backbones do before their classifier.
    """

    kind = "embedding_extractor"

    def _reshape(self, raw: torch.Tensor, batch_size: int) -> torch.Tensor:
        expected = self.expected_shape(batch_size)
        dim = self.card.num_channels
        if raw.ndim == 2 and tuple(raw.shape) == (batch_size, dim):
            return raw.reshape(expected)
        if raw.ndim == 4 and tuple(raw.shape[:2]) == (batch_size, dim):
            return raw.mean(dim=(2, 3), keepdim=True)
        raise _shape_error(
            self.card, expected, raw, f" (or ({batch_size}, {dim}) or ({batch_size}, {dim}, h, w))"
        )


_ADAPTERS: dict[str, type[OutputAdapter]] = {
    adapter.kind: adapter
    for adapter in (
        PixelSegmenterAdapter,
        PatchClassifierAdapter,
        AnomalyScorerAdapter,
        EmbeddingExtractorAdapter,
    )
}


def adapter_for(card: ModelCard) -> OutputAdapter:
    """The output adapter for the card's kind."""
    return _ADAPTERS[card.kind](card)


def crop_overlap(scores: torch.Tensor, card: ModelCard) -> torch.Tensor:
    """Keep each tile's central ``step_px`` region: (N, C, s, s) -> (N, C, k, k).

    ``k = step_px / output_stride`` for dense outputs; patch-level outputs are returned as is.
    """
    if not card.is_dense or card.overlap_px == 0:
        return scores
    crop = card.crop_px // card.output_stride
    return scores[..., crop : scores.shape[-2] - crop, crop : scores.shape[-1] - crop]


def _check_finite(scores: torch.Tensor, card: ModelCard, what: str) -> None:
    finite = torch.isfinite(scores)
    if bool(finite.all()):
        return
    n_nan = int(torch.isnan(scores).sum())
    n_inf = int((~finite).sum()) - n_nan
    raise ModelOutputInvalid(
        f"model {card.ref} produced {n_nan} NaN and {n_inf} infinite values in its {what} "
        f"(shape {tuple(scores.shape)}); check the input normalisation and the model's numerics"
    )


def _shape_error(
    card: ModelCard, expected: tuple[int, ...], raw: torch.Tensor, alternatives: str
) -> ModelOutputInvalid:
    return ModelOutputInvalid(
        f"model {card.ref} ({card.kind}) returned shape {tuple(raw.shape)}, expected "
        f"{expected}{alternatives}: (batch, {card.num_channels} channels "
        + ("= embedding_dim" if card.is_extractor else f"for classes {list(card.class_names)}")
        + f", tile_size_px {card.tile_size_px} / output_stride {card.output_stride})"
    )
