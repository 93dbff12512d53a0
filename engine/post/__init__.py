"""Post-processing: cohort-wide normalisation, thresholds, morphology, components, metrics.

``engine.post(root, model)`` runs it (Dask over the cohort); the pure compute lives in
:mod:`engine.post.compute` and :mod:`engine.metrics`.
"""

from engine.post.cohort import PostReport, post, post_is_current, read_post_record, stale_slides
from engine.post.params import PostExecution, PostParams

__all__ = [
    "PostExecution",
    "PostParams",
    "PostReport",
    "post",
    "post_is_current",
    "read_post_record",
    "stale_slides",
]

from engine._callable import make_module_callable  # noqa: E402

make_module_callable(__name__, post)
