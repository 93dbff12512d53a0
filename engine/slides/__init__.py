"""Slide readers: one small protocol, OpenSlide behind it today."""

from engine.slides.base import SlideInfo, SlideReader, check_mpp
from engine.slides.hashing import slide_content_sha256
from engine.slides.openslide_reader import OpenSlideReader, open_slide

__all__ = [
    "OpenSlideReader",
    "SlideInfo",
    "SlideReader",
    "check_mpp",
    "open_slide",
    "slide_content_sha256",
]
