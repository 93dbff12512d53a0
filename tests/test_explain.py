"""Explanations on tiles: Grad-CAM where the model file allows hooks, input x gradient elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from engine.errors import ModelError
from engine.explain.attribution import explain_tiles
from engine.explain.loading import explainable_model
from engine.models import ModelCard, ModelRegistry

TILE_PX = 64


class RedDetector(torch.nn.Module):
    """Tumour logit = redness (R - (G + B) / 2) of a 3x3 neighbourhood: fixed, inspectable weights."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Conv2d(4, 2, 1)
        with torch.no_grad():
            self.features[0].weight.zero_()
            self.features[0].bias.zero_()
            redness = torch.tensor([1.0, -0.5, -0.5]).view(3, 1, 1) / 9.0
            self.features[0].weight[0] = redness.expand(3, 3, 3)  # channel 0: redness
            self.features[0].weight[1] = -redness.expand(3, 3, 3)  # channel 1: its opposite
            self.head.weight.zero_()
            self.head.bias.zero_()
            self.head.weight[1, 0] = 8.0  # tumour from redness
            self.head.weight[0, 1] = 8.0  # background from its opposite

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def red_card(explain_layer: str | None) -> ModelCard:
    return ModelCard.model_validate(
        {
            "name": "red-detector",
            "version": "1" if explain_layer else "2",
            "kind": "pixel_segmenter",
            "class_names": ["background", "tumour"],
            "tile_size_px": TILE_PX,
            "output_stride": 1,
            "mpp": 1.0,
            "output_activation": "softmax",
            "normalisation": {"input_scale": "0-1"},
            "explain_layer": explain_layer,
            "description": "Test model: tumour = red pixels (fixed weights, no training).",
            "training_data": "none: fixed arithmetic for tests",
        }
    )


def red_square_tiles() -> tuple[np.ndarray, np.ndarray]:
    tiles = np.full((3, TILE_PX, TILE_PX, 3), 235, np.uint8)  # pale pink-white background
    squares = np.zeros((3, TILE_PX, TILE_PX), bool)
    for i, (y, x) in enumerate([(8, 8), (36, 20), (20, 40)]):
        squares[i, y : y + 16, x : x + 16] = True
        tiles[i][squares[i]] = (200, 40, 60)
    return tiles, squares


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "root")


def register_export(registry: ModelRegistry, tmp_path: Path, card: ModelCard):
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(
        RedDetector().eval(), (torch.rand(2, 3, TILE_PX, TILE_PX),), dynamic_shapes=({0: batch},)
    )
    path = tmp_path / "red.pt2"
    torch.export.save(program, path)
    return registry.add(path, card)


def register_torchscript(registry: ModelRegistry, tmp_path: Path, card: ModelCard):
    path = tmp_path / "red.pt"
    torch.jit.script(RedDetector().eval()).save(str(path))
    return registry.add(path, card)


def _mass_inside(maps: np.ndarray, regions: np.ndarray) -> float:
    return float((maps * regions).sum() / maps.sum())


def test_grad_cam_on_an_exported_model_points_at_the_red_square(registry, tmp_path) -> None:
    registered = register_export(registry, tmp_path, red_card("features"))
    module, layer, note = explainable_model(registered)
    assert layer is not None and "Grad-CAM" in note
    tiles, squares = red_square_tiles()
    result = explain_tiles(module, registered.card, tiles, layer=layer, note=note)
    assert result.method == "grad_cam" and result.maps.shape == (3, TILE_PX, TILE_PX)
    assert result.maps.max() == pytest.approx(1.0)
    # The square is 1/16 of the tile; nearly all attribution lies on it (and its 1-px rim).
    assert _mass_inside(result.maps, squares) > 0.8
    assert np.all(result.scores > 0.05)


def test_torchscript_falls_back_to_input_x_gradient_and_says_why(registry, tmp_path) -> None:
    registered = register_torchscript(registry, tmp_path, red_card("features"))
    module, layer, note = explainable_model(registered)
    assert layer is None and "TorchScript modules cannot be hooked" in note
    tiles, squares = red_square_tiles()
    result = explain_tiles(module, registered.card, tiles, note=note)
    assert result.method == "input_x_gradient"
    # Smoothed by a 4 µm (4 px) Gaussian: nearly all mass within 2 sigma of the square, and each
    # tile's peak on the square itself.
    grown = np.stack([ndimage.binary_dilation(s, iterations=8) for s in squares])
    assert _mass_inside(result.maps, grown) > 0.95
    for attribution, square in zip(result.maps, squares, strict=True):
        assert square.flat[int(attribution.argmax())]
    # Scores match what the engine's scoring path computes for the same tiles.
    from engine.models.scoring import ScoringModel

    scored = ScoringModel(module, registered.card, model_id=registered.model_id)(tiles)
    np.testing.assert_allclose(result.scores, scored[:, 1].mean(dim=(1, 2)).numpy(), rtol=1e-5)


def test_unknown_explain_layer_is_refused_when_the_model_is_added(registry, tmp_path) -> None:
    with pytest.raises(ModelError, match="'encoder.layer4'.*top-level layers are: features, head"):
        register_export(registry, tmp_path, red_card("encoder.layer4"))
    assert registry.list() == []  # nothing half-registered
