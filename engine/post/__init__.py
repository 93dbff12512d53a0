"""Post-processing: cohort-wide normalisation, thresholds, morphology, components, metrics.

``engine.post(root, model)`` runs it (Dask over the cohort); the pure compute lives in
:mod:`engine.post.compute` and :mod:`engine.metrics`. Names are imported on first use, so
``import engine.post.compute`` pulls no Dask or zarr.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine._callable import lazy_callable_package

if TYPE_CHECKING:
    from engine.post.cohort import post
    from engine.post.params import PostExecution, PostParams
    from engine.post.record import post_is_current, read_post_record, stale_slides
    from engine.post.report import PostReport

_EXPORTS = {
    "PostExecution": "engine.post.params",
    "PostParams": "engine.post.params",
    "PostReport": "engine.post.report",
    "post": "engine.post.cohort",
    "post_is_current": "engine.post.record",
    "read_post_record": "engine.post.record",
    "stale_slides": "engine.post.record",
}

__all__ = [
    "PostExecution",
    "PostParams",
    "PostReport",
    "post",
    "post_is_current",
    "read_post_record",
    "stale_slides",
]

lazy_callable_package(__name__, _EXPORTS, main="post")
