"""Embedding extractors on real Ray actors write features stores aligned with the slide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import ray
import torch

from engine.bench.torchvision_cpu import import_torchvision
from engine.errors import ModelOutputInvalid
from engine.features import read_features
from engine.infer import InferParams, infer
from engine.ingest import ingest
from engine.models import ModelCard, ModelRegistry
from engine.slides import open_slide
from engine.store import read_completion

TILE, MPP = 64, 2.0


class MeanColour(torch.nn.Module):
    """Three features per tile: the mean of each input channel (fixed arithmetic, no weights)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def extractor_card(name: str, dim: int, **extra: object) -> ModelCard:
    return ModelCard.model_validate(
        {
            "name": name,
            "version": "1",
            "kind": "embedding_extractor",
            "embedding_dim": dim,
            "tile_size_px": TILE,
            "mpp": MPP,
            "output_stride": TILE,
            "output_activation": "none",
            "normalisation": {"input_scale": "0-1"},
            "description": "Test extractor.",
            "training_data": "none: fixed arithmetic for tests",
            **extra,
        }
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, synth_cohort: Path, ray_session) -> Path:
    root = tmp_path_factory.mktemp("features") / "root"
    assert not ingest(synth_cohort, root, progress=False).failures
    return root


def _register(root: Path, module: torch.nn.Module, card: ModelCard, *, trace: bool = False):
    path = root.parent / f"{card.name}.pt"
    example = torch.zeros(2, 3, TILE, TILE)
    scripted = torch.jit.trace(module.eval(), example) if trace else torch.jit.script(module)
    scripted.save(str(path))
    return ModelRegistry(root).add(path, card)


def test_extractor_cards_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="embedding_dim"):
        ModelCard.model_validate({**extractor_card("a", 3).model_dump(), "embedding_dim": None})
    with pytest.raises(ValueError, match="no classes"):
        ModelCard.model_validate({**extractor_card("a", 3).model_dump(), "class_names": ["x"]})
    with pytest.raises(ValueError, match="one value per tile"):
        ModelCard.model_validate({**extractor_card("a", 3).model_dump(), "output_stride": 4})
    with pytest.raises(ValueError, match="at least one output channel"):
        ModelCard.model_validate(
            {
                **extractor_card("a", 3).model_dump(),
                "kind": "patch_classifier",
                "embedding_dim": None,
            }
        )


def test_features_store_holds_one_embedding_per_tissue_tile(
    fleet: Path, synth_cohort: Path
) -> None:
    model = _register(fleet, MeanColour(), extractor_card("mean-colour", 3))
    report = infer(fleet, model.ref, progress=False, params=InferParams(unit_tiles=4))
    assert not report.failures and len(report.scored) == 4
    assert not (fleet / "predictions" / model.model_id).exists(), "extractors write no score map"
    for row in report.scored:
        features = read_features(fleet / "features" / model.model_id / f"{row['slide_id']}.zarr")
        n = features.embeddings.shape[0]
        assert features.embeddings.shape == (n, 3) and features.embeddings.dtype == np.float16
        assert n == row["tiles"] > 0
        # Row-major tile order, level-0 boxes on the grid (2 µm tiles of 64 px on a 0.5 µm slide).
        assert (np.diff(features.grid[:, 0] * 10_000 + features.grid[:, 1]) > 0).all()
        np.testing.assert_array_equal(features.coords[:, 0], features.grid[:, 1] * TILE * 4)
        np.testing.assert_array_equal(features.coords[:, 1], features.grid[:, 0] * TILE * 4)
        assert ((features.tissue_fraction > 0) & (features.tissue_fraction <= 1)).all()
        assert (features.tissue_fraction == 1).any()
        with open_slide(synth_cohort.parent / "slides" / f"{row['slide_id']}.tif") as slide:
            for index in np.linspace(0, n - 1, 5).astype(int):
                x, y, w, h = (int(v) for v in features.coords[index])
                region = slide.read_region_rgb(x, y, 0, w, h)
                # The model saw the region at 2 µm/px; the mean colour does not depend on that.
                expected = region.reshape(-1, 3).mean(axis=0) / 255.0
                if w == h == TILE * 4:
                    np.testing.assert_allclose(features.embeddings[index], expected, atol=0.01)


def test_rerun_skips_and_a_new_dtype_re_extracts(fleet: Path) -> None:
    model = _register(fleet, MeanColour(), extractor_card("mean-colour-rerun", 3))
    first = infer(fleet, model.ref, progress=False)
    again = infer(fleet, model.ref, progress=False)
    assert sorted(again.skipped) == sorted(r["slide_id"] for r in first.scored) and not again.scored
    wide = infer(fleet, model.ref, progress=False, params=InferParams(feature_dtype="float32"))
    assert len(wide.scored) == 4
    path = fleet / "features" / model.model_id / f"{wide.scored[0]['slide_id']}.zarr"
    assert read_features(path).embeddings.dtype == np.float32
    assert read_completion(path)["input_key"]["feature_dtype"] == "float32"


def test_interrupted_extraction_resumes_with_the_units_it_had(fleet: Path) -> None:
    model = _register(fleet, MeanColour(), extractor_card("mean-colour-resume", 3))
    params = InferParams(unit_tiles=2, max_actors=1, in_flight_per_actor=1)
    done: list[object] = []

    class Stop(Exception):
        pass

    def stop_after_three(stats: object, actors: list) -> None:
        done.append(stats)
        if len(done) == 3:
            for actor in actors:
                ray.kill(actor)
            raise Stop

    with pytest.raises(Stop):
        infer(fleet, model.ref, progress=False, params=params, on_unit_done=stop_after_three)
    first_tiles = sum(s.tiles for s in done)  # type: ignore[attr-defined]
    resumed = infer(fleet, model.ref, progress=False, params=params)
    clean_root = fleet / "features" / model.model_id
    resumed_arrays = {
        r["slide_id"]: read_features(clean_root / f"{r['slide_id']}.zarr") for r in resumed.scored
    }
    total = sum(r["tiles"] for r in resumed.scored)
    assert resumed.tiles == total - first_tiles, "the three finished units are not redone"
    import shutil

    shutil.rmtree(clean_root)
    clean = infer(fleet, model.ref, progress=False, params=params)
    for row in clean.scored:
        fresh = read_features(clean_root / f"{row['slide_id']}.zarr")
        np.testing.assert_array_equal(fresh.embeddings, resumed_arrays[row["slide_id"]].embeddings)
        np.testing.assert_array_equal(fresh.coords, resumed_arrays[row["slide_id"]].coords)


def test_a_torchvision_resnet18_works_through_the_card(fleet: Path) -> None:
    torchvision = import_torchvision()
    torch.manual_seed(0)
    backbone = torchvision.models.resnet18(weights=None)  # random weights: nothing downloaded
    backbone.fc = torch.nn.Identity()
    card = extractor_card(
        "resnet18-random",
        512,
        architecture="torchvision ResNet-18, fc removed",
        normalisation={
            "input_scale": "0-1",
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
        },
    )
    model = _register(fleet, backbone, card, trace=True)
    report = infer(fleet, model.ref, progress=False, slide_ids=["synth_000"])
    assert not report.failures
    features = read_features(fleet / "features" / model.model_id / "synth_000.zarr")
    assert features.embeddings.shape[1] == 512
    assert np.isfinite(features.embeddings.astype(np.float32)).all()
    # Different tissue gives different embeddings (the features are the network's, not constant).
    assert (
        np.unique(features.embeddings[:, :8], axis=0).shape[0] > features.embeddings.shape[0] // 2
    )


def test_an_extractor_returning_the_wrong_width_is_refused(fleet: Path) -> None:
    with pytest.raises(ModelOutputInvalid, match="embedding_dim"):
        _register(fleet, MeanColour(), extractor_card("wrong-width", 4))
