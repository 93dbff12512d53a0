"""Figure composition on exact pixel grids: panels side by side, titles, colourbar, legend.

Each panel keeps the pixel grid of the thumbnail it was drawn on (no resampling), so the
heatmap in a panel is exactly the heatmap PNG. Text is drawn with PIL in DejaVu Sans (shipped
with matplotlib), which has the µ, ² and – the labels use.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from engine.views.render import RGB, colormap_lut

WHITE: RGB = (255, 255, 255)
INK: RGB = (30, 30, 30)
GAP_PX = 8


_FONTS = threading.local()


def font(size_px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans at ``size_px`` (matplotlib's bundled copy), else PIL's default font.

    Cached per thread: a FreeType face must not be used by two threads at once.
    """
    cache: dict[int, ImageFont.FreeTypeFont | ImageFont.ImageFont] = _FONTS.__dict__.setdefault(
        "cache", {}
    )
    if size_px not in cache:
        try:
            import matplotlib

            path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
            cache[size_px] = ImageFont.truetype(str(path), size_px)
        except (ImportError, OSError):
            cache[size_px] = ImageFont.load_default(size=size_px)
    return cache[size_px]


def font_size_for(width_px: int) -> int:
    """Label size for a panel ``width_px`` wide."""
    return int(np.clip(width_px // 40, 11, 22))


def _text_width(text: str, size_px: int) -> int:
    left, _, right, _ = font(size_px).getbbox(text)
    return int(right - left)


def text_band(width_px: int, texts: Sequence[tuple[int, str]], size_px: int) -> NDArray[np.uint8]:
    """A white band ``width_px`` wide with each ``(x, text)`` written at ``x``."""
    height = int(size_px * 1.8)
    image = Image.new("RGB", (width_px, height), WHITE)
    draw = ImageDraw.Draw(image)
    for x, text in texts:
        draw.text((x, int(size_px * 0.35)), text, fill=INK, font=font(size_px))
    return np.asarray(image)


def colourbar(
    width_px: int, colormap: str, low: float, high: float, label: str, size_px: int
) -> NDArray[np.uint8]:
    """A horizontal colourbar with its low, middle and high values and a label."""
    bar_h = max(8, size_px)
    lut = colormap_lut(colormap)
    ramp = lut[np.linspace(0, len(lut) - 1, width_px).round().astype(int)]
    bar = np.broadcast_to(ramp[None], (bar_h, width_px, 3)).copy()
    bar[[0, -1], :] = INK
    bar[:, [0, -1]] = INK
    mid = (low + high) / 2
    ticks = [
        (0, f"{low:.3g}"),
        (width_px // 2 - _text_width(f"{mid:.3g}", size_px) // 2, f"{mid:.3g}"),
        (width_px - _text_width(f"{high:.3g}", size_px), f"{high:.3g}"),
    ]
    under = text_band(width_px, ticks, size_px)
    title = text_band(
        width_px, [(max(0, width_px // 2 - _text_width(label, size_px) // 2), label)], size_px
    )
    return np.concatenate([title, bar, under], axis=0)


def legend(
    entries: Sequence[tuple[str, RGB, str]], width_px: int, size_px: int
) -> NDArray[np.uint8]:
    """Swatches with names, wrapped to ``width_px``; style ``"fill"`` or ``"outline"``."""
    swatch = size_px
    row_h = int(size_px * 1.8)
    items: list[tuple[int, int, str, RGB, str]] = []
    x = y = 0
    for name, colour, style in entries:
        item_w = swatch + size_px // 2 + _text_width(name, size_px) + 2 * size_px
        if x and x + item_w > width_px:
            x, y = 0, y + row_h
        items.append((x, y, name, colour, style))
        x += item_w
    image = Image.new("RGB", (width_px, y + row_h), WHITE)
    draw = ImageDraw.Draw(image)
    for x, y, name, colour, style in items:
        top = y + (row_h - swatch) // 2
        box = (x, top, x + swatch, top + swatch)
        if style == "outline":
            draw.rectangle(box, outline=colour, width=max(2, swatch // 6))
        else:
            draw.rectangle(box, fill=colour, outline=INK)
        draw.text(
            (x + swatch + size_px // 2, y + int(size_px * 0.35)), name, fill=INK, font=font(size_px)
        )
    return np.asarray(image)


def _pad_to_width(image: NDArray[np.uint8], width_px: int) -> NDArray[np.uint8]:
    if image.shape[1] >= width_px:
        return image[:, :width_px]
    pad = np.full((image.shape[0], width_px - image.shape[1], 3), 255, np.uint8)
    return np.concatenate([image, pad], axis=1)


def hstack(images: Sequence[NDArray[np.uint8]], gap_px: int = GAP_PX) -> NDArray[np.uint8]:
    """RGB images side by side, top-aligned, ``gap_px`` of white between them."""
    height = max(im.shape[0] for im in images)
    parts: list[NDArray[np.uint8]] = []
    for index, im in enumerate(images):
        if index:
            parts.append(np.full((height, gap_px, 3), 255, np.uint8))
        if im.shape[0] < height:
            im = np.concatenate(
                [im, np.full((height - im.shape[0], im.shape[1], 3), 255, np.uint8)]
            )
        parts.append(im)
    return np.concatenate(parts, axis=1)


def compose_panels(
    panels: Sequence[NDArray[np.uint8]],
    titles: Sequence[str],
    footers: Sequence[NDArray[np.uint8] | None] = (),
    *,
    gap_px: int = GAP_PX,
) -> NDArray[np.uint8]:
    """Equal-size RGB panels side by side, a title above each and an optional footer below each.

    The result is ``len(panels) * w + (len(panels) - 1) * gap_px`` wide for panels ``w`` wide.
    """
    if not panels:
        raise ValueError("no panels")
    shapes = {p.shape for p in panels}
    if len(shapes) != 1 or len(panels[0].shape) != 3 or panels[0].shape[2] != 3:
        raise ValueError(f"panels must be RGB images of one shape, got {sorted(shapes)}")
    if len(titles) != len(panels):
        raise ValueError(f"{len(panels)} panels but {len(titles)} titles")
    height, width = panels[0].shape[:2]
    size = font_size_for(width)
    columns = []
    for index, (panel, title) in enumerate(zip(panels, titles, strict=True)):
        parts = [text_band(width, [(0, title)], size), panel]
        footer = footers[index] if index < len(footers) else None
        if footer is not None:
            parts.append(np.full((size // 2, width, 3), 255, np.uint8))
            parts.append(_pad_to_width(footer, width))
        columns.append(np.concatenate(parts, axis=0))
    return hstack(columns, gap_px)


def framed(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """``rgb`` with a one-pixel grey frame drawn on its edge (same size)."""
    out = rgb.copy()
    out[[0, -1], :] = (170, 170, 170)
    out[:, [0, -1]] = (170, 170, 170)
    return out
