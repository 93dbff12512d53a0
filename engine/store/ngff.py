"""NGFF 0.5 metadata builders: pure functions from geometry to ``attributes.ome`` dicts.

Conventions: axes are named ``c``, ``y``, ``x`` for RGB images and ``y``, ``x`` for labels and
score maps; physical units are micrometres. ``scale`` of a dataset is its pixel size in µm, and
its ``translation`` puts the centre of its first pixel where it lies in level-0 physical space
(a pixel of a downsampled level covers ``ds`` level-0 pixels, so its centre is shifted by
``(ds - 1) / 2`` level-0 pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.store.frame import Frame

NGFF_VERSION = "0.5"


def level_scale(
    path: str, mpp_y: float, mpp_x: float, downsample_y: float, downsample_x: float
) -> Frame:
    """Frame of a level that is ``downsample`` times coarser than level 0 of pixel size ``mpp``."""
    return Frame.of_level(path, mpp_y, mpp_x, downsample_y, downsample_x)


def _axes(channel_axis: bool) -> list[dict[str, str]]:
    spatial = [
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    return ([{"name": "c", "type": "channel"}] if channel_axis else []) + spatial


_DOWNSCALE_DESCRIPTIONS = {
    "area": "native scanner levels copied as decoded by OpenSlide, then 2x2 area means",
    "nearest": "2x nearest-neighbour subsampling (label values are never averaged)",
    "mean": "mean of score values over each output pixel",
}


def multiscales(
    name: str,
    levels: Sequence[Frame],
    *,
    channel_axis: bool,
    downscale_type: str,
) -> list[dict[str, Any]]:
    """The ``multiscales`` list for one image (levels ordered from finest to coarsest)."""
    prefix = [1.0] if channel_axis else []
    datasets = []
    for level in levels:
        datasets.append(
            {
                "path": level.path,
                "coordinateTransformations": [
                    {"type": "scale", "scale": prefix + [level.scale_y_um, level.scale_x_um]},
                    {
                        "type": "translation",
                        "translation": [0.0] * len(prefix)
                        + [level.translation_y_um, level.translation_x_um],
                    },
                ],
            }
        )
    return [
        {
            "name": name,
            "axes": _axes(channel_axis),
            "datasets": datasets,
            "type": downscale_type,
            "metadata": {
                "description": _DOWNSCALE_DESCRIPTIONS[downscale_type],
                "method": "slidefleet",
            },
        }
    ]


def rgb_omero() -> dict[str, Any]:
    """Rendering settings so viewers show the three channels as an RGB composite."""
    colors = ["FF0000", "00FF00", "0000FF"]
    labels = ["red", "green", "blue"]
    return {
        "channels": [
            {
                "label": label,
                "color": color,
                "active": True,
                "coefficient": 1.0,
                "family": "linear",
                "inverted": False,
                "window": {"min": 0, "max": 255, "start": 0, "end": 255},
            }
            for label, color in zip(labels, colors, strict=True)
        ],
        "rdefs": {"model": "color"},
    }


def image_attributes(name: str, levels: Sequence[Frame]) -> dict[str, Any]:
    """``attributes.ome`` of an RGB multiscale image group."""
    return {
        "version": NGFF_VERSION,
        "multiscales": multiscales(name, levels, channel_axis=True, downscale_type="area"),
        "omero": rgb_omero(),
    }


def label_attributes(
    name: str,
    levels: Sequence[Frame],
    *,
    source_image: str = "../../",
    colors: dict[int, tuple[int, int, int, int]] | None = None,
    properties: dict[int, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``attributes.ome`` of a label image under ``labels/`` (integer classes, nearest downscale)."""
    image_label: dict[str, Any] = {"version": NGFF_VERSION, "source": {"image": source_image}}
    if colors:
        image_label["colors"] = [
            {"label-value": value, "rgba": list(rgba)} for value, rgba in sorted(colors.items())
        ]
    if properties:
        image_label["properties"] = [
            {"label-value": value, **props} for value, props in sorted(properties.items())
        ]
    return {
        "version": NGFF_VERSION,
        "multiscales": multiscales(name, levels, channel_axis=False, downscale_type="nearest"),
        "image-label": image_label,
    }


def labels_group_attributes(label_names: Sequence[str]) -> dict[str, Any]:
    """``attributes.ome`` of the ``labels`` group listing its label images."""
    return {"version": NGFF_VERSION, "labels": list(label_names)}


def score_map_attributes(
    name: str, levels: Sequence[Frame], channel_names: Sequence[str]
) -> dict[str, Any]:
    """``attributes.ome`` of a float score/probability map (a separate image, not a label)."""
    return {
        "version": NGFF_VERSION,
        "multiscales": multiscales(name, levels, channel_axis=True, downscale_type="mean"),
        "omero": {
            "channels": [
                {
                    "label": channel,
                    "color": "FFFFFF",
                    "active": index == 0,
                    "coefficient": 1.0,
                    "family": "linear",
                    "inverted": False,
                    "window": {"min": 0.0, "max": 1.0, "start": 0.0, "end": 1.0},
                }
                for index, channel in enumerate(channel_names)
            ],
            "rdefs": {"model": "greyscale"},
        },
    }
