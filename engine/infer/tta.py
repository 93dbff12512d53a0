"""Test-time augmentation: dihedral transforms of tiles and their exact inverses on score maps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

TTAMode = Literal["none", "flips", "dihedral"]

# Each transform acts on the last two axes (y, x) and has an inverse for the output map.
_TRANSFORMS: dict[
    str, tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]
] = {
    "identity": (lambda t: t, lambda t: t),
    "hflip": (lambda t: t.flip(-1), lambda t: t.flip(-1)),
    "vflip": (lambda t: t.flip(-2), lambda t: t.flip(-2)),
    "rot90": (lambda t: t.rot90(1, (-2, -1)), lambda t: t.rot90(-1, (-2, -1))),
    "rot180": (lambda t: t.rot90(2, (-2, -1)), lambda t: t.rot90(-2, (-2, -1))),
    "rot270": (lambda t: t.rot90(3, (-2, -1)), lambda t: t.rot90(-3, (-2, -1))),
    "transpose": (lambda t: t.transpose(-2, -1), lambda t: t.transpose(-2, -1)),
    "antitranspose": (
        lambda t: t.rot90(2, (-2, -1)).transpose(-2, -1),
        lambda t: t.transpose(-2, -1).rot90(-2, (-2, -1)),
    ),
}

TTA_TRANSFORMS: dict[str, tuple[str, ...]] = {
    "none": ("identity",),
    "flips": ("identity", "hflip", "vflip"),
    "dihedral": (
        "identity",
        "hflip",
        "vflip",
        "rot90",
        "rot180",
        "rot270",
        "transpose",
        "antitranspose",
    ),
}


def with_tta(
    score: Callable[[torch.Tensor], torch.Tensor], tiles_nchw: torch.Tensor, mode: TTAMode
) -> torch.Tensor:
    """Mean of ``score`` over the transforms of ``mode``, each output mapped back by its inverse."""
    total: torch.Tensor | None = None
    names = TTA_TRANSFORMS[mode]
    for name in names:
        forward, inverse = _TRANSFORMS[name]
        out = inverse(score(forward(tiles_nchw).contiguous()))
        total = out if total is None else total + out
    assert total is not None
    return total / len(names)
