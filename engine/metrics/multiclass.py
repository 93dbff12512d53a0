"""Multi-class segmentation metrics and class merge maps.

The confusion matrix follows scikit-learn: rows are ground truth, columns are prediction. A class
absent from both prediction and truth has undefined IoU / Dice (``None``) and is left out of the
means, never counted as a perfect 1.0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from engine.metrics.binary import ratio, valid_mask


def _labels(array: ArrayLike, name: str) -> NDArray[np.integer]:
    arr = np.asarray(array)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an integer label map, got dtype {arr.dtype}")
    return arr


def confusion_matrix(
    pred: ArrayLike, truth: ArrayLike, valid: ArrayLike | None = None, *, n_classes: int
) -> NDArray[np.int64]:
    """``(n_classes, n_classes)`` pixel confusion matrix, rows = truth, columns = prediction.

    Labels must lie in ``0 .. n_classes - 1`` on valid pixels (use ``valid`` to drop an
    "unannotated" label); one ``bincount`` over the valid pixels.
    """
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    p = _labels(pred, "pred")
    t = _labels(truth, "truth")
    if p.shape != t.shape:
        raise ValueError(f"pred has shape {p.shape}, truth {t.shape}")
    v = valid_mask(valid, p.shape)
    pv = p[v].astype(np.int64)
    tv = t[v].astype(np.int64)
    for name, values in (("pred", pv), ("truth", tv)):
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            raise ValueError(
                f"{name} has labels outside 0..{n_classes - 1} on valid pixels "
                f"(min {values.min()}, max {values.max()})"
            )
    cm = np.bincount(tv * n_classes + pv, minlength=n_classes * n_classes)
    return cm.reshape(n_classes, n_classes).astype(np.int64)


def _check_cm(cm: ArrayLike) -> NDArray[np.int64]:
    arr = np.asarray(cm)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {arr.shape}")
    return arr.astype(np.int64)


def per_class_iou_dice(cm: ArrayLike) -> tuple[list[float | None], list[float | None]]:
    """Per-class IoU and Dice from a confusion matrix; ``None`` for a class in neither map."""
    m = _check_cm(cm)
    tp = np.diag(m)
    fp = m.sum(axis=0) - tp
    fn = m.sum(axis=1) - tp
    iou = [ratio(int(a), int(a + b + c)) for a, b, c in zip(tp, fp, fn, strict=True)]
    dice = [ratio(2 * int(a), int(2 * a + b + c)) for a, b, c in zip(tp, fp, fn, strict=True)]
    return iou, dice


def _mean_defined(values: list[float | None], classes: Iterable[int] | None) -> float | None:
    chosen = values if classes is None else [values[c] for c in classes]
    defined = [v for v in chosen if v is not None]
    return float(np.mean(defined)) if defined else None


def miou(cm: ArrayLike, classes: Iterable[int] | None = None) -> float | None:
    """Mean IoU over ``classes`` (default all) that are defined; ``None`` if none is."""
    return _mean_defined(per_class_iou_dice(cm)[0], classes)


def macro_dice(cm: ArrayLike, classes: Iterable[int] | None = None) -> float | None:
    """Mean Dice over ``classes`` (default all) that are defined; ``None`` if none is."""
    return _mean_defined(per_class_iou_dice(cm)[1], classes)


@dataclass(frozen=True)
class ClassMerge:
    """A named map from source labels to merged labels, with names of the merged labels."""

    name: str
    mapping: Mapping[int, int]
    class_names: Mapping[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for src, dst in self.mapping.items():
            if src < 0 or dst < 0:
                raise ValueError(f"{self.name}: labels must be non-negative, got {src} -> {dst}")
        object.__setattr__(self, "mapping", MappingProxyType(dict(self.mapping)))
        object.__setattr__(self, "class_names", MappingProxyType(dict(self.class_names)))

    @property
    def n_classes(self) -> int:
        """Number of merged labels (``max target + 1``), for :func:`confusion_matrix`."""
        return max(self.mapping.values()) + 1


def merge_classes(
    labels: ArrayLike, mapping: Mapping[int, int] | ClassMerge, *, default: int | None = None
) -> NDArray[np.integer]:
    """Relabel ``labels`` through ``mapping`` with one lookup table.

    A label present in ``labels`` but not in ``mapping`` goes to ``default``; with
    ``default=None`` it raises ``ValueError`` (an unmapped class is a wrong map, not background).
    The result is ``uint8`` when every target fits, else ``int32``.
    """
    table = mapping.mapping if isinstance(mapping, ClassMerge) else mapping
    if any(dst < 0 for dst in table.values()) or (default is not None and default < 0):
        raise ValueError("merge targets must be non-negative")
    arr = _labels(labels, "labels")
    if arr.size and arr.min() < 0:
        raise ValueError("labels must be non-negative")
    top = int(arr.max()) if arr.size else 0
    targets = [*table.values(), *([] if default is None else [default])]
    dtype = np.uint8 if max(targets, default=0) <= 255 else np.int32
    lut = np.full(top + 1, -1 if default is None else default, dtype=np.int64)
    for src, dst in table.items():
        if src <= top:
            lut[src] = dst
    if default is None:
        present = np.flatnonzero(np.bincount(arr.ravel().astype(np.int64), minlength=top + 1))
        missing = present[lut[present] < 0]
        if missing.size:
            raise ValueError(f"labels {missing.tolist()} are not in the merge map")
    merged: NDArray[np.integer] = lut.astype(dtype)[arr]
    return merged


TIGER_7_TO_3: Final = ClassMerge(
    name="tiger-7-to-3",
    # TIGER (tiger.grand-challenge.org/Evaluation): invasive tumour = 1; stroma = tumour-associated
    # stroma 2 + inflamed stroma 6; every other tissue class (in-situ tumour 3, healthy glands 4,
    # necrosis 5, rest 7) = rest. 0 is "not annotated": keep it 0 and pass valid=labels > 0.
    mapping={0: 0, 1: 1, 2: 2, 6: 2, 3: 3, 4: 3, 5: 3, 7: 3},
    class_names={0: "unannotated", 1: "invasive tumour", 2: "stroma", 3: "rest"},
)
"""TIGER's 7 tissue classes merged to its 3 evaluation classes (0 stays "unannotated")."""

PANDA_RADBOUD_TO_TUMOUR: Final = ClassMerge(
    name="panda-radboud-to-tumour",
    # Radboud masks: 0 background/unknown, 1 stroma, 2 healthy epithelium, 3/4/5 Gleason 3/4/5.
    mapping={0: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 1},
    class_names={0: "not tumour", 1: "tumour"},
)
"""PANDA Radboud masks to binary tumour: Gleason patterns {3, 4, 5} -> 1."""

PANDA_KAROLINSKA_TO_TUMOUR: Final = ClassMerge(
    name="panda-karolinska-to-tumour",
    # Karolinska masks: 0 background/unknown, 1 benign tissue, 2 cancerous tissue.
    mapping={0: 0, 1: 0, 2: 1},
    class_names={0: "not tumour", 1: "tumour"},
)
"""PANDA Karolinska masks to binary tumour: cancerous tissue {2} -> 1."""
