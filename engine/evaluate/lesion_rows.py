"""One slide's detections judged against its lesions, detection by detection (pure compute)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.metrics.lesions import Detection, LesionMap


def detection_outcomes(
    detections: Sequence[Detection], lesions: LesionMap | None
) -> list[dict[str, Any]]:
    """``outcome`` and ``lesion`` of each detection, as :func:`match_detections` counts them.

    'tp' is the highest-confidence hit of a non-ITC lesion (the one the FROC counts),
    'tp_repeat' any other hit of it, 'itc' a hit of an ITC region, 'fp' a detection off every lesion.
    """
    out: list[dict[str, Any]] = []
    best: dict[int, int] = {}
    for index, detection in enumerate(detections):
        label = 0
        if lesions is not None:
            row, col = int(np.floor(detection.y_px)), int(np.floor(detection.x_px))
            if 0 <= row < lesions.labels.shape[0] and 0 <= col < lesions.labels.shape[1]:
                label = int(lesions.labels[row, col])
        if label == 0:
            outcome = "fp"
        elif lesions is not None and label in lesions.itc_labels:
            outcome = "itc"
        else:
            outcome = "tp_repeat"
            previous = best.get(label)
            if previous is None or detection.confidence > detections[previous].confidence:
                best[label] = index
        out.append({"outcome": outcome, "lesion": label})
    for index in best.values():
        out[index]["outcome"] = "tp"
    return out
