"""Load a registered model for explanation: hookable where the file allows it."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from engine.errors import ModelError
from engine.models.card import ModelCard
from engine.models.loading import detect_model_format, load_model
from engine.models.registry import RegisteredModel


def explainable_model(
    registered: RegisteredModel,
) -> tuple[torch.nn.Module, torch.nn.Module | None, str]:
    """``(module, grad_cam_layer or None, note)`` for a registered model, on the CPU.

    The file is loaded (and vetted) by the engine's own loader first. A torch.export program is
    then unflattened so that its layers are real submodules Grad-CAM can hook; a TorchScript
    module cannot be hooked, so its explanations fall back to input x gradient, and the note says
    so. A card that names no ``explain_layer`` also gets input x gradient.
    """
    module = load_model(registered.path, device="cpu")
    card = registered.card
    if card.explain_layer is None:
        return module, None, "input x gradient (the model card names no explain_layer)"
    if detect_model_format(registered.path) != "torch_export":
        return (
            module,
            None,
            (
                f"input x gradient (TorchScript modules cannot be hooked, so Grad-CAM on "
                f"{card.explain_layer!r} is not possible; export with torch.export to get it)"
            ),
        )
    unflattened = _unflattened(registered.path)
    layers = dict(unflattened.named_modules())
    problem = _missing_layer(card, layers)
    if problem is not None:
        raise ModelError(problem)
    return unflattened, layers[card.explain_layer], f"Grad-CAM on layer {card.explain_layer!r}"


def check_explain_layer(model_path: Path, card: ModelCard) -> None:
    """Refuse a card whose ``explain_layer`` a torch.export model does not have (at registration,
    so the mistake shows when the model is added, not when views run)."""
    if card.explain_layer is None or detect_model_format(model_path) != "torch_export":
        return
    problem = _missing_layer(card, dict(_unflattened(model_path).named_modules()))
    if problem is not None:
        raise ModelError(problem)


def _unflattened(model_path: Path) -> torch.nn.Module:
    program = torch.export.load(io.BytesIO(Path(model_path).read_bytes()))
    return torch.export.unflatten(program)


def _missing_layer(card: ModelCard, layers: dict[str, torch.nn.Module]) -> str | None:
    if card.explain_layer in layers:
        return None
    known = ", ".join(name for name in layers if name and "." not in name)
    return (
        f"model card {card.ref} names explain_layer {card.explain_layer!r}, which the model "
        f"does not have; its top-level layers are: {known}. Fix explain_layer in the card (a "
        "dotted module name) or leave it out for input x gradient."
    )
