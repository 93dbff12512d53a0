"""Model cards, safe loading, the registry, output adapters and the demo models."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from engine.errors import ModelError, ModelOutputInvalid
from engine.models import (
    ModelCard,
    ModelRegistry,
    Normalisation,
    RegisteredModel,
    ScoringModel,
    adapter_for,
    crop_overlap,
    detect_model_format,
    load_model,
    make_demo_models,
    model_id,
    normalise,
    read_card,
    version_sort_key,
)
from engine.models.card import render_model_card_schema
from engine.models.demo import DEMO_MPP, DEMO_TILE_SIZE_PX

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "schemas" / "model-card.schema.json"


def card_dict(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "toy-seg",
        "version": "1.0.0",
        "kind": "pixel_segmenter",
        "class_names": ["tumour"],
        "tile_size_px": 128,
        "mpp": 2.0,
        "overlap_px": 16,
        "normalisation": {"input_scale": "0-1", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "output_stride": 4,
        "output_activation": "sigmoid",
        "description": "test model",
        "training_data": "none",
    }
    base.update(overrides)
    return base


def make_card(**overrides: Any) -> ModelCard:
    return ModelCard.model_validate(card_dict(**overrides))


class PooledDarkness(torch.nn.Module):
    """(N, 3, T, T) -> (N, 1, T/4, T/4): a fixed, weight-free pixel 'segmenter'."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(-x.mean(dim=1, keepdim=True), 4)


class Scaled(torch.nn.Module):
    """PooledDarkness with one weight, so two instances differ in their file bytes."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.avg_pool2d(-x.mean(dim=1, keepdim=True), 4)


class FixedInput(torch.nn.Module):
    """Works only on 32 px tiles."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], 3, 32, 32)[:, :1, ::4, ::4]


class TwoLogits(torch.nn.Module):
    """A WSInfer-style patch classifier: (N, 3, T, T) -> (N, 2) logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([m, -m], dim=1)


def script(module: torch.nn.Module, path: Path) -> Path:
    torch.jit.script(module).save(str(path))
    return path


class Payload:
    """Unpickling this creates ``marker``: proof that a loader ran pickled code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


# ---------------------------------------------------------------------------------------------
# Cards


def test_valid_card_and_derived_geometry() -> None:
    card = make_card()
    assert (card.step_px, card.crop_px, card.output_size, card.kept_output_size) == (112, 8, 32, 28)
    assert card.output_mpp == 8.0
    assert card.is_dense
    assert card.positive_class_index == 0
    with pytest.raises(ValidationError):
        card.mpp = 1.0  # type: ignore[misc]
    patch = make_card(
        kind="patch_classifier",
        class_names=["normal", "tumour"],
        overlap_px=0,
        output_stride=128,
        output_activation="softmax",
    )
    assert (patch.output_size, patch.is_dense, patch.positive_class_index) == (1, False, 1)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"overlap_px": 64}, "overlap_px (64) must be less than half of tile_size_px (128)"),
        ({"overlap_px": 7}, "overlap_px (7) must be even"),
        ({"output_stride": 3}, "tile_size_px (128) must be divisible by output_stride (3)"),
        ({"overlap_px": 4}, "overlap_px/2 (2) must be divisible by output_stride (4)"),
        ({"kind": "patch_classifier", "output_stride": 4}, "output_stride must equal"),
        (
            {"kind": "anomaly_scorer", "class_names": ["a", "b"], "output_activation": "none"},
            "exactly one output channel",
        ),
        (
            {"kind": "anomaly_scorer", "class_names": ["anomaly"]},
            "output_activation must be 'none'",
        ),
        ({"output_activation": "softmax"}, "softmax over a single class"),
        ({"positive_class": "stroma"}, "positive_class 'stroma' is not one of class_names"),
        ({"class_names": ["a", "a"]}, "class_names must be unique"),
        ({"name": "../evil"}, "name '../evil' is not allowed"),
        ({"version": "1:2"}, "version '1:2' is not allowed"),
        ({"mpp": 0}, "greater than 0"),
        (
            {"normalisation": {"input_scale": "0-1", "mean": [123.7, 116.3, 103.5]}},
            "belong with input_scale '0-255'",
        ),
        (
            {"normalisation": {"input_scale": "0-255", "std": [1, 0, 1]}},
            "std must be finite and > 0",
        ),
        ({"weights_url": "http://x"}, "Extra inputs are not permitted"),
    ],
)
def test_card_validation_errors_are_clear(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelError, match="toy card is invalid") as caught:
        ModelCard.from_mapping(card_dict(**overrides), source="toy card")
    assert message in str(caught.value)


def test_card_error_names_the_field() -> None:
    with pytest.raises(ModelError) as caught:
        ModelCard.from_mapping(card_dict(tile_size_px="big"))
    assert "  - tile_size_px:" in str(caught.value)


def test_schema_file_matches_the_model() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == render_model_card_schema(), (
        "schemas/model-card.schema.json is stale: run `python -m engine.contracts --write`"
    )


def test_cards_validate_against_the_schema_file() -> None:
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.validate(json.loads(make_card().to_json()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(card_dict(kind="detector"), schema)


# ---------------------------------------------------------------------------------------------
# WSInfer configs


WSINFER_CONFIG = {
    "spec_version": "1.0",
    "architecture": "resnet34",
    "num_classes": 2,
    "class_names": ["notumor", "tumor"],
    "patch_size_pixels": 350,
    "spacing_um_px": 0.25,
    "transform": [
        {"name": "Resize", "arguments": {"size": 224}},
        {"name": "ToTensor"},
        {
            "name": "Normalize",
            "arguments": {"mean": [0.7238, 0.5716, 0.6779], "std": [0.112, 0.1459, 0.1089]},
        },
    ],
}


def test_wsinfer_config_becomes_a_patch_classifier_card() -> None:
    card = ModelCard.from_wsinfer_config(WSINFER_CONFIG, name="brca-tumour", version="1")
    assert card.kind == "patch_classifier"
    assert card.class_names == ("notumor", "tumor")
    # 350 px at 0.25 µm/px resized to 224 px = 224 px at 0.390625 µm/px.
    assert card.tile_size_px == 224
    assert card.mpp == pytest.approx(0.390625)
    assert card.output_stride == 224
    assert card.overlap_px == 0
    assert card.output_activation == "softmax"
    assert card.normalisation == Normalisation(
        input_scale="0-1", mean=(0.7238, 0.5716, 0.6779), std=(0.112, 0.1459, 0.1089)
    )
    assert card.architecture == "resnet34"
    assert "Not stated" in card.training_data
    # Its own decision rule (the likelier of two classes) serves cohorts nobody calibrated.
    assert card.default_threshold == 0.5
    single = dict(WSINFER_CONFIG, num_classes=1, class_names=["tumor"])
    single_card = ModelCard.from_wsinfer_config(single, name="x", version="1")
    assert single_card.output_activation == "sigmoid" and single_card.default_threshold == 0.5
    three = dict(WSINFER_CONFIG, num_classes=3, class_names=["a", "b", "c"])
    assert ModelCard.from_wsinfer_config(three, name="x", version="1").default_threshold is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_classes": 3}, "num_classes is 3 but class_names has 2"),
        ({"transform": [{"name": "RandomFlip"}]}, "'RandomFlip' is not supported"),
        (
            {
                "transform": [
                    {"name": "Normalize", "arguments": {"mean": [0, 0, 0], "std": [1, 1, 1]}}
                ]
            },
            "Normalize before ToTensor",
        ),
        ({"spacing_um_px": None}, "invalid"),
    ],
)
def test_bad_wsinfer_configs_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        ModelCard.from_wsinfer_config(dict(WSINFER_CONFIG, **change), name="x", version="1")


def test_wsinfer_model_directory_registers_and_runs(tmp_path: Path) -> None:
    model_dir = tmp_path / "brca-tumour"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(WSINFER_CONFIG))
    model_path = script(TwoLogits(), model_dir / "torchscript_model.pt")
    with pytest.raises(ModelError, match="has no version"):
        read_card(model_dir / "config.json")
    registry = ModelRegistry(tmp_path / "fleet")
    registered = registry.add(model_path, model_dir / "config.json", version="2024.1")
    assert registered.ref == "brca-tumour:2024.1"  # name from the directory
    scores = ScoringModel.from_registered(registered)(np.zeros((3, 224, 224, 3), np.uint8))
    assert scores.shape == (3, 2, 1, 1)
    assert torch.allclose(scores.sum(dim=1), torch.ones(3, 1, 1))


# ---------------------------------------------------------------------------------------------
# model_id


def test_model_id_changes_with_file_and_card(tmp_path: Path) -> None:
    card = make_card()
    a = script(Scaled(1.0), tmp_path / "a.pt")
    b = script(Scaled(2.0), tmp_path / "b.pt")
    same_as_a = tmp_path / "copy" / "a.pt"
    same_as_a.parent.mkdir()
    same_as_a.write_bytes(a.read_bytes())
    id_a = model_id(a, card)
    assert len(id_a) == 16
    assert int(id_a, 16) >= 0
    assert model_id(same_as_a, card) == id_a  # content, not location
    assert model_id(b, card) != id_a
    assert model_id(a, make_card(description="another description")) != id_a
    assert model_id(a, make_card(version="1.0.1")) != id_a
    # The card's JSON formatting does not matter, only its content.
    reformatted = tmp_path / "card.json"
    reformatted.write_text(json.dumps(json.loads(card.to_json()), indent=7, sort_keys=True))
    assert model_id(a, read_card(reformatted)) == id_a


# ---------------------------------------------------------------------------------------------
# Registry


def test_registry_add_list_resolve(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    assert registry.list() == []
    versions = ["1.9", "1.10", "2.0.0-rc1", "2.0.0", "1.2"]
    for index, version in enumerate(versions):
        path = script(Scaled(float(index + 1)), tmp_path / f"m{index}.pt")
        registered = registry.add(path, make_card(version=version))
        assert isinstance(registered, RegisteredModel)
        assert registered.path == tmp_path / "models" / "toy-seg" / version / "model.pt"
        assert registered.card_path.is_file()
        assert registered.model_id == model_id(registered.path, registered.card)
    listed = registry.list()
    assert [m.version for m in listed] == ["1.2", "1.9", "1.10", "2.0.0-rc1", "2.0.0"]
    assert registry.resolve("toy-seg").version == "2.0.0"
    assert registry.resolve("toy-seg:1.10").version == "1.10"
    assert json.loads(registry.resolve("toy-seg:1.9").card_path.read_text())["version"] == "1.9"
    with pytest.raises(ModelError, match="no model named 'nope'"):
        registry.resolve("nope")
    with pytest.raises(ModelError, match="has no version '9'"):
        registry.resolve("toy-seg:9")
    with pytest.raises(ModelError, match="not a model reference"):
        registry.resolve("../models")


def test_version_order() -> None:
    ordered = ["alpha", "beta", "0.9", "v1", "1.0.1-rc1", "1.0.1", "1.2", "1.10", "2"]
    assert sorted(reversed(ordered), key=version_sort_key) == ordered


def test_readding_is_a_noop_and_a_different_model_is_refused(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    path = script(Scaled(1.0), tmp_path / "a.pt")
    first = registry.add(path, make_card())
    stamp = first.path.stat().st_mtime_ns
    again = registry.add(path, make_card())
    assert again == first
    assert first.path.stat().st_mtime_ns == stamp
    other = script(Scaled(3.0), tmp_path / "b.pt")
    with pytest.raises(ModelError, match="already registered with model_id"):
        registry.add(other, make_card())
    with pytest.raises(ModelError, match="already registered"):
        registry.add(path, make_card(description="changed"))
    assert registry.resolve("toy-seg").model_id == first.model_id
    assert [p.name for p in (tmp_path / "models" / "toy-seg").iterdir()] == ["1.0.0"]


def test_failed_add_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = ModelRegistry(tmp_path)
    path = script(PooledDarkness(), tmp_path / "a.pt")
    # Output check fails: the card promises 2 classes, the model emits 1 channel.
    with pytest.raises(ModelOutputInvalid, match=r"expected \(3, 2, 32, 32\)"):
        registry.add(path, make_card(class_names=["stroma", "tumour"]))

    # The rename itself fails (e.g. a full disk).
    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        registry.add(path, make_card())
    monkeypatch.undo()
    assert list((tmp_path / "models" / "toy-seg").iterdir()) == []  # no entry, no temporaries
    assert registry.list() == []
    registry.add(path, make_card())
    assert [m.ref for m in registry.list()] == ["toy-seg:1.0.0"]


def test_add_checks_the_card_against_the_model(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    path = script(FixedInput(), tmp_path / "a.pt")
    with pytest.raises(ModelError, match=r"failed on a test batch of shape \(3, 3, 128, 128\)"):
        registry.add(path, make_card())
    with pytest.raises(ModelError, match="says name 'toy-seg' but 'other' was given"):
        registry.add(path, make_card(), name="other")


# ---------------------------------------------------------------------------------------------
# Safe loading


def test_torchscript_and_export_files_load(tmp_path: Path) -> None:
    ts = script(PooledDarkness(), tmp_path / "ts.pt")
    assert detect_model_format(ts) == "torchscript"
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(load_model(ts)(x), PooledDarkness()(x))
    program = torch.export.export(PooledDarkness(), (x,))
    exported = tmp_path / "model.pt2"
    torch.export.save(program, str(exported))
    assert detect_model_format(exported) == "torch_export"
    module = load_model(exported)
    module.eval()  # a plain ExportedProgram.module() raises here
    assert torch.allclose(module(x), PooledDarkness()(x))


def test_pickles_are_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    raw_pickle = tmp_path / "raw.pkl"
    raw_pickle.write_bytes(pickle.dumps({"weights": Payload(marker)}, protocol=4))
    saved = tmp_path / "saved.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": Payload(marker)}, saved)
    state_dict = tmp_path / "state_dict.pt"
    torch.save(Scaled(1.0).state_dict(), state_dict)
    harmless = tmp_path / "harmless.pt"
    torch.save({"a": 1}, harmless)
    # A real TorchScript archive whose data.pkl was swapped for a payload.
    ts = script(PooledDarkness(), tmp_path / "ts.pt")
    tampered = tmp_path / "tampered.pt"
    _rewrite_zip(ts, tampered, {"ts/data.pkl": pickle.dumps(Payload(marker), protocol=2)})

    for path, message in [
        (raw_pickle, "is a Python pickle"),
        (saved, "is a torch.save checkpoint"),
        (state_dict, "is a torch.save checkpoint"),
        (harmless, "is a torch.save checkpoint"),
        (tampered, "references posix.mkdir"),
    ]:
        with pytest.raises(ModelError, match=message):
            load_model(path)
        with pytest.raises(ModelError):
            ModelRegistry(tmp_path / "fleet").add(path, make_card())
    assert not marker.exists()
    assert ModelRegistry(tmp_path / "fleet").list() == []


def test_tampered_exports_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    x = torch.rand(2, 3, 16, 16)
    good = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(PooledDarkness(), (x,)), str(good))
    graph = json.loads(zipfile.ZipFile(good).read("model/models/model.json"))

    def with_graph(name: str, edit: Any) -> Path:
        changed = json.loads(json.dumps(graph))
        edit(changed)
        out = tmp_path / f"{name}.pt2"
        _rewrite_zip(good, out, {"model/models/model.json": json.dumps(changed).encode()})
        return out

    def call_torch_load(g: dict[str, Any]) -> None:
        g["graph_module"]["graph"]["nodes"][0]["target"] = "torch.load"

    def exec_guard(g: dict[str, Any]) -> None:
        g["guards_code"] = [f"__import__('os').mkdir('{marker}')"]

    evil_inputs = tmp_path / "evil_inputs.pt"
    torch.save(((Payload(marker),), {}), evil_inputs)
    cases = [
        (with_graph("target", call_torch_load), "graph calls 'torch.load'"),
        (with_graph("guard", exec_guard), "guard"),
        (
            _rewrite_zip(
                good,
                tmp_path / "inputs.pt2",
                {"model/data/sample_inputs/model.pt": evil_inputs.read_bytes()},
            ),
            "weights_only=True",
        ),
        (
            _with_entry(
                good, tmp_path / "aoti.pt2", "model/data/aotinductor/model/lib.so", b"\x7fELF"
            ),
            "unexpected entry",
        ),
    ]
    for path, message in cases:
        with pytest.raises(ModelError, match=message):
            load_model(path)
    assert not marker.exists()


def _rewrite_zip(source: Path, target: Path, replace: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as out:
        for info in src.infolist():
            out.writestr(info.filename, replace.get(info.filename, src.read(info)))
    return target


def _with_entry(source: Path, target: Path, name: str, data: bytes) -> Path:
    _rewrite_zip(source, target, {})
    with zipfile.ZipFile(target, "a") as out:
        out.writestr(name, data)
    return target


def test_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "absent.pt")
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(ModelError, match="not a zip archive"):
        load_model(text)


# ---------------------------------------------------------------------------------------------
# Adapters


def test_normalise_matches_the_card() -> None:
    tiles = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3)).astype(np.uint8)
    card = make_card()
    x = normalise(tiles, card)
    assert x.shape == (2, 3, 8, 8)
    assert x.dtype == torch.float32
    expected = (torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    assert torch.allclose(x, expected)
    bgr = Normalisation(input_scale="0-255", channel_order="BGR")
    assert torch.equal(normalise(tiles, bgr)[:, 0], torch.from_numpy(tiles[..., 2]).float())
    with pytest.raises(ValueError, match="uint8 tiles shaped"):
        normalise(tiles.astype(np.float32), card)


def test_adapters_apply_the_activation_and_shape() -> None:
    raw = torch.randn(4, 1, 32, 32)
    assert torch.allclose(adapter_for(make_card())(raw, 4), torch.sigmoid(raw))
    three = make_card(class_names=["bg", "stroma", "tumour"], output_activation="softmax")
    probs = adapter_for(three)(torch.randn(4, 3, 32, 32), 4)
    assert torch.allclose(probs.sum(dim=1), torch.ones(4, 32, 32))
    patch = make_card(
        kind="patch_classifier",
        class_names=["normal", "tumour"],
        overlap_px=0,
        output_stride=128,
        output_activation="softmax",
    )
    assert adapter_for(patch)(torch.randn(4, 2), 4).shape == (4, 2, 1, 1)
    anomaly_tile = make_card(
        kind="anomaly_scorer",
        class_names=["anomaly"],
        overlap_px=0,
        output_stride=128,
        output_activation="none",
    )
    scores = torch.rand(4)
    assert torch.equal(adapter_for(anomaly_tile)(scores, 4).flatten(), scores)
    cropped = crop_overlap(torch.zeros(4, 1, 32, 32), make_card())
    assert cropped.shape == (4, 1, 28, 28)


def test_adapters_refuse_nan_and_wrong_shapes() -> None:
    card = make_card()
    adapter = adapter_for(card)
    raw = torch.zeros(2, 1, 32, 32)
    raw[0, 0, :3, 0] = float("nan")
    raw[1, 0, 5, 5] = float("inf")
    with pytest.raises(ModelOutputInvalid, match=r"toy-seg:1.0.0 produced 3 NaN and 1 infinite"):
        adapter(raw, 2)
    with pytest.raises(
        ModelOutputInvalid, match=r"returned shape \(2, 1, 16, 16\), expected \(2, 1, 32, 32\)"
    ):
        adapter(torch.zeros(2, 1, 16, 16), 2)
    with pytest.raises(ModelOutputInvalid, match=r"expected \(3, 1, 32, 32\)"):
        adapter(torch.zeros(2, 1, 32, 32), 3)  # batch size mismatch
    with pytest.raises(ModelOutputInvalid, match="expected a single tensor"):
        adapter((torch.zeros(2, 1, 32, 32),), 2)
    patch = make_card(
        kind="patch_classifier",
        class_names=["normal", "tumour"],
        overlap_px=0,
        output_stride=128,
        output_activation="softmax",
    )
    with pytest.raises(ModelOutputInvalid, match=r"returned shape \(2, 3\)"):
        adapter_for(patch)(torch.zeros(2, 3), 2)


# ---------------------------------------------------------------------------------------------
# Demo models


@pytest.fixture(scope="module")
def demo_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RegisteredModel]:
    root = tmp_path_factory.mktemp("demo-fleet")
    return {m.name: m for m in make_demo_models(root, seed=0)}


@pytest.fixture(scope="module")
def fresh_patches() -> tuple[np.ndarray, np.ndarray]:
    """Patches the models never saw (another seed), half with tumour."""
    from engine.synth import render_patch

    rng = np.random.default_rng(2024)
    pairs = [render_patch(rng, DEMO_TILE_SIZE_PX, DEMO_MPP, tumour=bool(i % 2)) for i in range(24)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def _auc(positive: np.ndarray, negative: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    return float(roc_auc_score(labels, np.r_[positive, negative]))


def test_demo_models_are_registered_honestly(
    tmp_path: Path, demo_models: dict[str, RegisteredModel]
) -> None:
    assert set(demo_models) == {
        "demo-unet-tumour",
        "demo-segmenter-3class",
        "demo-patch-classifier",
        "demo-anomaly-ae",
        "demo-embedder",
    }
    root = next(iter(demo_models.values())).path.parents[3]
    listed = ModelRegistry(root).list()
    assert {m.model_id for m in listed} == {m.model_id for m in demo_models.values()}
    for registered in demo_models.values():
        assert detect_model_format(registered.path) == "torchscript"
        card = registered.card
        assert "synthetic" in card.training_data
        assert "not for clinical use" in card.description.lower()
        assert (card.tile_size_px, card.mpp) == (DEMO_TILE_SIZE_PX, DEMO_MPP)
    assert demo_models["demo-unet-tumour"].card.class_names == ("tumour",)
    assert demo_models["demo-segmenter-3class"].card.class_names == (
        "background",
        "stroma",
        "tumour",
    )
    assert demo_models["demo-anomaly-ae"].card.kind == "anomaly_scorer"
    embedder = demo_models["demo-embedder"].card
    assert (embedder.kind, embedder.embedding_dim, embedder.class_names) == (
        "embedding_extractor",
        64,
        (),
    )


def test_demo_rerun_is_a_noop(
    demo_models: dict[str, RegisteredModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = next(iter(demo_models.values())).path.parents[3]
    again = make_demo_models(root, seed=0)
    assert {m.name: m.model_id for m in again} == {n: m.model_id for n, m in demo_models.items()}
    # Other demo cards (here: fewer training patches, so a quick render) are refused.
    monkeypatch.setattr("engine.models.demo._N_TRAIN_PATCHES", 4)
    with pytest.raises(ModelError, match="different card"):
        make_demo_models(root, seed=1)


@pytest.mark.parametrize("name", ["demo-unet-tumour", "demo-segmenter-3class"])
def test_demo_segmenters_find_tumour_pixels(
    name: str, demo_models: dict[str, RegisteredModel], fresh_patches: tuple[np.ndarray, np.ndarray]
) -> None:
    tiles, masks = fresh_patches
    model = ScoringModel.from_registered(demo_models[name])
    scores = model.raw_scores(tiles)[:, model.card.positive_class_index]
    # Output pixels that are wholly tumour vs wholly normal tissue (stroma).
    labels = torch.from_numpy(masks).long()
    share = F.avg_pool2d(F.one_hot(labels, 3).permute(0, 3, 1, 2).float(), 4)
    tumour, stroma = share[:, 2] == 1, share[:, 1] == 1
    auc = _auc(scores[tumour].numpy(), scores[stroma].numpy())
    assert auc > 0.9, f"{name}: pixel AUC tumour vs stroma {auc:.3f}"
    assert float(scores[tumour].mean()) > float(scores[stroma].mean()) + 0.3


@pytest.mark.parametrize("name", ["demo-patch-classifier", "demo-anomaly-ae", "demo-unet-tumour"])
def test_demo_patch_scores_separate_tumour_from_normal(
    name: str, demo_models: dict[str, RegisteredModel], fresh_patches: tuple[np.ndarray, np.ndarray]
) -> None:
    tiles, masks = fresh_patches
    model = ScoringModel.from_registered(demo_models[name])
    scores = model(tiles)[:, model.card.positive_class_index].flatten(1).mean(dim=1).numpy()
    has_tumour = (masks == 2).any(axis=(1, 2))
    auc = _auc(scores[has_tumour], scores[~has_tumour])
    assert auc > 0.9, f"{name}: patch AUC {auc:.3f}"


def test_add_errors_name_the_users_file_not_the_registry_copy(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "fleet")
    raw_pickle = tmp_path / "my-model.pt"
    raw_pickle.write_bytes(pickle.dumps({"weights": [1, 2]}, protocol=4))
    with pytest.raises(ModelError, match="is a Python pickle") as caught:
        registry.add(raw_pickle, make_card())
    assert str(raw_pickle) in str(caught.value) and ".tmp-" not in str(caught.value)
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)  # copying it would block forever
    with pytest.raises(ModelError, match="not a regular file"):
        registry.add(fifo, make_card())
    with pytest.raises(ModelError, match="not a regular file"):
        registry.add(tmp_path, make_card())
    assert registry.list() == []
