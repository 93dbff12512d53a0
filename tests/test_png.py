"""Views' PNG writer: libpng pixels with exactly the text and DPI Pillow would have written."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from engine.views.png import png_bytes

TEXT = {"slide_id": "case 7", "unit": "µm (Latin-1)", "class": "腫瘍 (needs iTXt)", "empty": ""}


@pytest.mark.parametrize("channels", [3, 4])
def test_pixels_text_and_dpi_read_back_as_pillow_writes_them(channels: int) -> None:
    image = np.random.default_rng(channels).integers(0, 256, (37, 53, channels), dtype=np.uint8)
    dpi = (25_400 / 0.25, 25_400 / 8.0)
    ours = Image.open(io.BytesIO(png_bytes(image, TEXT, dpi)))
    ours.load()
    info = PngInfo()
    for key, value in TEXT.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG", pnginfo=info, dpi=dpi)
    pillows = Image.open(buffer)
    pillows.load()
    assert ours.mode == pillows.mode == ("RGB" if channels == 3 else "RGBA")
    np.testing.assert_array_equal(np.asarray(ours), image)
    assert ours.text == pillows.text == TEXT
    assert ours.info["dpi"] == pillows.info["dpi"]


def test_without_metadata_and_bad_input() -> None:
    image = np.full((4, 5, 3), 200, np.uint8)
    plain = Image.open(io.BytesIO(png_bytes(image)))
    plain.load()
    assert plain.text == {} and "dpi" not in plain.info
    with pytest.raises(ValueError, match="uint8"):
        png_bytes(np.zeros((4, 5), np.uint8))
