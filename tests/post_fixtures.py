"""Fixtures for post tests: a fleet scored by the Darkness model, and copies of it to change."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zarr

from engine.infer import infer
from engine.ingest import ingest
from engine.models import ModelCard, RegisteredModel
from tests.infer_models import Darkness, darkness_card, register


class TwoClassDarkness(torch.nn.Module):
    """Channels (1 - darkness, darkness): a two-class "segmenter" whose argmax is darkness > 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = F.avg_pool2d(1.0 - x.mean(dim=1, keepdim=True), 4)
        return torch.cat([1.0 - d, d], dim=1)


def two_class_card(name: str) -> ModelCard:
    fields = darkness_card(name).model_dump()
    fields.update(class_names=("background", "tumour"), positive_class="tumour")
    return ModelCard.model_validate(fields)


@pytest.fixture(scope="module")
def post_fleet(tmp_path_factory: pytest.TempPathFactory, synth_cohort: Path, ray_session) -> Path:
    """The 4-slide synthetic cohort ingested and scored by Darkness (8 µm score maps)."""
    root = tmp_path_factory.mktemp("post") / "root"
    assert not ingest(synth_cohort, root, progress=False).failures
    register(root, Darkness(), darkness_card("darkness"))
    assert not infer(root, "darkness", progress=False).failures
    return root


@pytest.fixture
def fleet_copy(post_fleet: Path, tmp_path: Path) -> Path:
    """A private copy of the scored fleet without its tables, for tests that change inputs."""
    root = tmp_path / "root"
    shutil.copytree(post_fleet, root, ignore=shutil.ignore_patterns("tables"))
    return root


def add_two_class_predictions(root: Path, darkness: RegisteredModel) -> RegisteredModel:
    """Register TwoClassDarkness and write its maps from Darkness's (no second inference run)."""
    model = register(root, TwoClassDarkness(), two_class_card("darkness-2class"))
    source_dir = root / "predictions" / darkness.model_id
    for source in sorted(source_dir.glob("*.zarr")):
        target = root / "predictions" / model.model_id / source.name
        shutil.copytree(source, target)
        group = zarr.open_group(target, mode="r+")
        d = np.asarray(group["0"][:])
        del group["0"]
        array = group.create_array(
            "0",
            shape=(2, *d.shape[1:]),
            chunks=(2, 224, 224),
            dtype="float32",
            fill_value=float("nan"),
            dimension_names=("c", "y", "x"),
        )
        array[:] = np.concatenate([1.0 - d, d])
        attrs = dict(group.attrs["slidefleet"])
        attrs.update(model_id=model.model_id, class_names=["background", "tumour"])
        group.attrs["slidefleet"] = attrs
        record = json.loads((target / "slidefleet-complete.json").read_text())
        record["input_key"]["model_id"] = model.model_id
        (target / "slidefleet-complete.json").write_text(json.dumps(record))
    return model
