"""Load a registered model for explanation: hookable where the file allows it."""

from __future__ import annotations

import io

import torch

from engine.errors import ModelError
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
    program = torch.export.load(io.BytesIO(registered.path.read_bytes()))
    unflattened = torch.export.unflatten(program)
    layers = dict(unflattened.named_modules())
    if card.explain_layer not in layers:
        known = ", ".join(name for name in layers if name and "." not in name)
        raise ModelError(
            f"model card {card.ref} names explain_layer {card.explain_layer!r}, which the model "
            f"does not have; its top-level layers are: {known}"
        )
    return unflattened, layers[card.explain_layer], f"Grad-CAM on layer {card.explain_layer!r}"
