"""Pure compute imports no Ray, Dask, zarr or torch, not even transitively.

Each module is imported in a fresh interpreter (this test process has them all loaded already),
which then reports which of the heavy packages ended up in ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

HEAVY = ("ray", "dask", "distributed", "zarr", "torch")

PURE_MODULES = [
    "engine.post.compute",
    "engine.post.aggregate",
    "engine.post.params",
    "engine.metrics",
    "engine.metrics.lesions",
    "engine.metrics.slide_level",
    "engine.tissue",
    "engine.infer.plan",
    "engine.ingest.pyramid",
    "engine.ingest.sparse",
    "engine.splits",
    "engine.annotations.rasterise",
    "engine.qc.slide_quality",
    "engine.qc.annotation_quality",
    "engine.qc.cohort_flags",
    "engine.features.tiles",
    "engine.mil.bags",
    "engine.mil.params",
    "engine.mil.evaluate",
    "engine.evaluate.lesion_rows",
    "engine.evaluate.params",
]

_PROBE = """
import importlib, json, sys
heavy = set(sys.argv[2].split(","))
pulled = {}
for module in sys.argv[1].split(","):
    importlib.import_module(module)
    new = sorted({m.split(".")[0] for m in sys.modules} & heavy - set().union(*pulled.values()))
    pulled[module] = new
print(json.dumps(pulled))
"""


def _heavy_after_import(*modules: str) -> dict[str, list[str]]:
    """module -> heavy packages its import added, importing ``modules`` in order, in one process."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(modules), ",".join(HEAVY)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_pure_modules_import_no_heavy_runtime() -> None:
    # One fresh interpreter for all of them: a module that pulls one in is named with what it pulled.
    pulled = _heavy_after_import(*PURE_MODULES)
    assert set(pulled) == set(PURE_MODULES)
    assert {m: p for m, p in pulled.items() if p} == {}


def test_probe_detects_a_heavy_import() -> None:
    # The probe itself must be able to fail: the orchestration layer does pull Dask and zarr.
    pulled = _heavy_after_import("engine.post.compute", "engine.post.cohort")
    assert pulled["engine.post.compute"] == []
    assert {"dask", "zarr"} <= set(pulled["engine.post.cohort"])


def test_stage_packages_stay_callable_and_export_their_names() -> None:
    import engine
    import engine.infer
    import engine.ingest
    import engine.post
    from engine.post import PostParams, post

    assert callable(engine.post)
    assert callable(engine.infer)
    assert callable(engine.ingest)
    assert post.__module__ == "engine.post.cohort"
    assert PostParams.__module__ == "engine.post.params"
    assert engine.infer.InferParams.__module__ == "engine.infer.params"
    assert engine.ingest.ingest.__module__ == "engine.ingest.cohort"
    with pytest.raises(AttributeError):
        _ = engine.post.no_such_name
