"""The model card: what a model file expects as input and what its output means.

A card is the contract between a model file and the engine. Geometry, in input pixels at the
card's ``mpp``:

* tiles of ``tile_size_px`` are read every ``step_px = tile_size_px - overlap_px`` pixels, so
  neighbouring tiles share ``overlap_px`` pixels of context;
* each tile's output is cropped by ``overlap_px / 2`` input pixels on every side, so the kept
  regions of neighbouring tiles abut exactly;
* one output pixel covers ``output_stride`` input pixels along each axis. A dense model (pixel
  segmenter, per-pixel anomaly scorer) emits ``tile_size_px / output_stride`` pixels per side; a
  patch-level model (patch classifier, per-patch anomaly scorer) has ``output_stride == step_px``
  and emits one value per tile.

The JSON Schema in ``schemas/model-card.schema.json`` is generated from :class:`ModelCard`
(``python -m engine.contracts --write`` or :func:`write_model_card_schema`); a test keeps
the two equal.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.errors import ModelError

ModelKind = Literal["pixel_segmenter", "patch_classifier", "anomaly_scorer", "embedding_extractor"]
OutputActivation = Literal["softmax", "sigmoid", "none"]
InputScale = Literal["0-1", "0-255"]

MODEL_KINDS: tuple[ModelKind, ...] = (
    "pixel_segmenter",
    "patch_classifier",
    "anomaly_scorer",
    "embedding_extractor",
)
#: Kinds that emit one value (a probability vector, a score or an embedding) per tile.
PATCH_LEVEL_KINDS: frozenset[str] = frozenset({"patch_classifier", "embedding_extractor"})

# Names and versions become directory names under ROOT/models/, and ':' separates them in a
# reference ("name:version"), so both are restricted like slide IDs.
_PATH_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "model-card.schema.json"


def is_path_safe(value: str) -> bool:
    """True when ``value`` may be a model name or version (a directory under ROOT/models/)."""
    return bool(_PATH_SAFE.match(value)) and ".." not in value


def _check_path_safe(value: str, what: str) -> str:
    if not is_path_safe(value):
        raise ValueError(
            f"{what} {value!r} is not allowed: use 1-128 letters, digits, '.', '_' or '-', starting "
            f"with a letter or digit and without '..' (it becomes a directory under ROOT/models/)."
        )
    return value


class Normalisation(BaseModel):
    """How uint8 RGB pixels become the model's float input: ``(x / scale - mean) / std``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_scale: InputScale = Field(
        description="'0-1': pixels are divided by 255 before mean/std (torchvision ToTensor); "
        "'0-255': raw pixel values. mean and std are in the same scale."
    )
    mean: tuple[float, float, float] = Field(
        default=(0.0, 0.0, 0.0), description="Per-channel mean, in channel_order."
    )
    std: tuple[float, float, float] = Field(
        default=(1.0, 1.0, 1.0), description="Per-channel standard deviation (> 0)."
    )
    channel_order: Literal["RGB", "BGR"] = Field(
        default="RGB", description="Channel order the model expects (slides are read as RGB)."
    )

    @model_validator(mode="after")
    def _check_values(self) -> Normalisation:
        if any(not math.isfinite(s) or s <= 0 for s in self.std):
            raise ValueError(
                f"normalisation.std must be finite and > 0 for every channel, got {self.std}"
            )
        if any(not math.isfinite(m) for m in self.mean):
            raise ValueError(f"normalisation.mean must be finite, got {self.mean}")
        if self.input_scale == "0-1" and any(abs(m) > 1.0 for m in self.mean):
            raise ValueError(
                f"normalisation.mean {self.mean} has values > 1 but input_scale is '0-1'; "
                "ImageNet-style means like 123.7 belong with input_scale '0-255' "
                "(or divide them by 255)."
            )
        return self


class ModelCard(BaseModel):
    """Everything the engine needs to run a model file and interpret its output."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Model name; a directory name under ROOT/models/.")
    version: str = Field(description="Model version, e.g. '1.2.0'; compared in natural order.")
    kind: ModelKind = Field(
        description="pixel_segmenter: per-pixel class probabilities; patch_classifier: one "
        "probability vector per tile; anomaly_scorer: one score channel (higher = more "
        "anomalous); embedding_extractor: one feature vector of embedding_dim per tile, written "
        "to features/<model_id>/<slide_id>.zarr instead of a score map."
    )
    class_names: tuple[str, ...] = Field(
        default=(),
        description="One name per output channel, in channel order (required, except for an "
        "embedding_extractor, which has none). A binary single-logit model has one name (e.g. "
        "['tumour']); an anomaly scorer has exactly one (e.g. ['anomaly']).",
    )
    embedding_dim: int | None = Field(
        default=None,
        ge=1,
        le=65536,
        description="embedding_extractor only: length of the feature vector per tile (e.g. 512 "
        "for a ResNet-18 without its classifier). The file may return (N, D), (N, D, 1, 1) or a "
        "(N, D, h, w) feature map, which the engine averages over h and w.",
    )
    positive_class: str | None = Field(
        default=None,
        description="The class whose score is thresholded into the positive mask and compared "
        "with ground truth (e.g. 'tumour'); default: the last class.",
    )
    default_threshold: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Probability threshold of the positive class the authors recommend. Used "
        "only for cohorts without calibration slides and without a threshold fitted earlier "
        "for this model version (post records which threshold it used).",
    )
    tile_size_px: int = Field(ge=8, le=8192, description="Side of the square input tile, pixels.")
    mpp: float = Field(gt=0, le=1000, description="Micrometres per pixel the model expects.")
    overlap_px: int = Field(
        default=0,
        ge=0,
        description="Pixels shared by neighbouring tiles (context); tiles are read every "
        "tile_size_px - overlap_px pixels and each output is cropped by overlap_px/2 per side.",
    )
    normalisation: Normalisation
    output_stride: int = Field(
        ge=1,
        description="Input pixels per output pixel along each axis. Dense models: divides "
        "tile_size_px. Patch-level models: tile_size_px - overlap_px (one value per tile).",
    )
    output_activation: OutputActivation = Field(
        description="Applied by the engine to the file's raw output: 'softmax' or 'sigmoid' "
        "when the file emits logits, 'none' when it emits probabilities or scores already."
    )
    description: str = Field(min_length=1, description="What the model does, in a sentence or two.")
    training_data: str = Field(
        min_length=1,
        description="An honest statement of what the model was trained on (or 'not stated').",
    )
    intended_use: str | None = Field(
        default=None, description="What the model is for, and what it must not be used for."
    )
    license: str | None = Field(
        default=None, description="Licence of the weights, e.g. 'CC-BY-4.0'."
    )
    architecture: str | None = Field(default=None, description="Network architecture, informative.")
    stain: str | None = Field(
        default=None, description="Stain the model was trained on, e.g. 'H&E'."
    )
    references: tuple[str, ...] = Field(default=(), description="Papers, URLs or DOIs.")
    explain_layer: str | None = Field(
        default=None,
        description="Dotted name of the layer Grad-CAM explains (e.g. 'encoder.layer4'); used "
        "where the model file allows hooks (torch.export). Otherwise, and for TorchScript, "
        "explanations use input x gradient.",
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return _check_path_safe(value, "name")

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        return _check_path_safe(value, "version")

    @field_validator("class_names")
    @classmethod
    def _check_class_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not name.strip() for name in value):
            raise ValueError(f"class_names must be non-empty strings, got {list(value)}")
        duplicates = sorted({name for name in value if value.count(name) > 1})
        if duplicates:
            raise ValueError(f"class_names must be unique; repeated: {duplicates}")
        return value

    @model_validator(mode="after")
    def _check_geometry(self) -> ModelCard:
        tile, overlap, stride = self.tile_size_px, self.overlap_px, self.output_stride
        if 2 * overlap >= tile:
            raise ValueError(
                f"overlap_px ({overlap}) must be less than half of tile_size_px ({tile}), "
                f"i.e. at most {(tile - 1) // 2}: otherwise the cropped tiles keep nothing."
            )
        if overlap % 2:
            raise ValueError(
                f"overlap_px ({overlap}) must be even: each tile's output is cropped by "
                "overlap_px/2 on every side."
            )
        step = tile - overlap
        if self.kind in PATCH_LEVEL_KINDS and stride != step:
            raise ValueError(
                f"a {self.kind} emits one value per tile, so output_stride must equal "
                f"tile_size_px - overlap_px = {step}, got {stride}."
            )
        if self.kind == "embedding_extractor":
            return self._check_extractor()
        if self.embedding_dim is not None:
            raise ValueError(
                f"embedding_dim is for an embedding_extractor only; a {self.kind} has class_names"
            )
        if not self.class_names:
            raise ValueError(f"class_names must name at least one output channel of a {self.kind}")
        if stride != step:  # dense output
            if tile % stride:
                raise ValueError(
                    f"tile_size_px ({tile}) must be divisible by output_stride ({stride}) "
                    f"for a dense {self.kind} (or set output_stride = {step} for one value per tile)."
                )
            if (overlap // 2) % stride:
                raise ValueError(
                    f"overlap_px/2 ({overlap // 2}) must be divisible by output_stride ({stride}) "
                    "so the crop falls on whole output pixels."
                )
        n_classes = len(self.class_names)
        if self.kind == "anomaly_scorer":
            if n_classes != 1:
                raise ValueError(
                    f"an anomaly_scorer has exactly one output channel, so one class name "
                    f"(e.g. ['anomaly']); got {list(self.class_names)}"
                )
            if self.output_activation != "none":
                raise ValueError(
                    "an anomaly_scorer's file must return the score itself: "
                    f"output_activation must be 'none', got {self.output_activation!r}"
                )
        if self.output_activation == "softmax" and n_classes < 2:
            raise ValueError(
                "softmax over a single class is always 1.0; a binary single-logit model uses "
                "output_activation 'sigmoid' (or give two class names)."
            )
        if self.positive_class is not None and self.positive_class not in self.class_names:
            raise ValueError(
                f"positive_class {self.positive_class!r} is not one of class_names "
                f"{list(self.class_names)}"
            )
        return self

    def _check_extractor(self) -> ModelCard:
        if self.embedding_dim is None:
            raise ValueError(
                "an embedding_extractor must state embedding_dim, the length of its feature "
                "vector per tile (e.g. 512 for a ResNet-18 without its classifier)"
            )
        if self.class_names:
            raise ValueError(
                "an embedding_extractor has no classes: leave class_names out (its output is "
                f"a feature vector of embedding_dim {self.embedding_dim})"
            )
        if self.output_activation != "none":
            raise ValueError(
                "an embedding_extractor's features are used as returned: output_activation "
                f"must be 'none', got {self.output_activation!r}"
            )
        if self.positive_class is not None:
            raise ValueError("an embedding_extractor has no positive_class")
        return self

    @property
    def is_extractor(self) -> bool:
        """True for an ``embedding_extractor`` (writes a features store, not a score map)."""
        return self.kind == "embedding_extractor"

    # Derived geometry -------------------------------------------------------------------------

    @property
    def step_px(self) -> int:
        """Distance between neighbouring tiles' origins, input pixels."""
        return self.tile_size_px - self.overlap_px

    @property
    def crop_px(self) -> int:
        """Input pixels cropped from every side of a tile's output."""
        return self.overlap_px // 2

    @property
    def is_dense(self) -> bool:
        """True when the output is a map per tile rather than one value per tile."""
        return self.output_stride != self.step_px

    @property
    def output_size(self) -> int:
        """Side of the raw output per tile, in output pixels (1 for patch-level models)."""
        return self.tile_size_px // self.output_stride if self.is_dense else 1

    @property
    def kept_output_size(self) -> int:
        """Side of the output per tile after the overlap crop, in output pixels."""
        return self.step_px // self.output_stride if self.is_dense else 1

    @property
    def output_mpp(self) -> float:
        """Micrometres per output pixel."""
        return self.mpp * self.output_stride

    @property
    def num_channels(self) -> int:
        """Output channels the file must emit (one per class name; embedding_dim for extractors)."""
        if self.embedding_dim is not None:
            return self.embedding_dim
        return len(self.class_names)

    @property
    def positive_class_index(self) -> int:
        """Channel of :attr:`positive_class` (default: the last class)."""
        if self.positive_class is None:
            return len(self.class_names) - 1
        return self.class_names.index(self.positive_class)

    @property
    def ref(self) -> str:
        """``name:version``, the reference a registry resolves."""
        return f"{self.name}:{self.version}"

    # Serialisation ----------------------------------------------------------------------------

    def to_json(self) -> str:
        """The card as pretty JSON, every field written out (what the registry stores)."""
        return json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"

    def canonical_json(self) -> bytes:
        """Canonical bytes for hashing: sorted keys, no whitespace, fields at default omitted.

        Omitting defaults keeps every existing ``model_id`` stable when a later SlideFleet adds
        an optional field.
        """
        payload = self.model_dump(mode="json", exclude_defaults=True)
        return json.dumps(
            payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "model card") -> ModelCard:
        """Validate a card from parsed JSON; errors become one :class:`ModelError` naming each field."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ModelError(f"{source} is invalid:\n{format_validation_error(exc)}") from None

    @classmethod
    def from_wsinfer_config(
        cls,
        config: Mapping[str, Any],
        *,
        name: str,
        version: str,
        description: str | None = None,
        source: str = "WSInfer config",
    ) -> ModelCard:
        """Make a ``patch_classifier`` card from a WSInfer ``config.json`` (spec_version 1.0).

        WSInfer applies softmax when ``num_classes > 1`` and sigmoid otherwise; ``Resize`` means
        the model sees ``size`` pixels spanning ``patch_size_pixels * spacing_um_px`` µm, which
        is the same as reading ``size`` pixels at a coarser mpp, so no resampling step is needed.
        """
        try:
            return _card_from_wsinfer(
                cls, config, name=name, version=version, description=description
            )
        except ValidationError as exc:
            raise ModelError(f"{source} is invalid:\n{format_validation_error(exc)}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{source} is invalid: {exc}") from None


def is_wsinfer_config(data: Mapping[str, Any]) -> bool:
    """True when ``data`` looks like a WSInfer config.json rather than a SlideFleet card."""
    return "spacing_um_px" in data and "patch_size_pixels" in data


def _card_from_wsinfer(
    cls: type[ModelCard],
    config: Mapping[str, Any],
    *,
    name: str,
    version: str,
    description: str | None,
) -> ModelCard:
    missing = [
        key
        for key in ("num_classes", "patch_size_pixels", "spacing_um_px", "class_names", "transform")
        if key not in config
    ]
    if missing:
        raise ValueError(f"missing keys {missing}")
    spec_version = config.get("spec_version")
    if spec_version not in (None, "1.0"):
        raise ValueError(f"spec_version {spec_version!r} is not supported (only '1.0')")
    class_names = [str(c) for c in config["class_names"]]
    num_classes = int(config["num_classes"])
    if num_classes != len(class_names):
        raise ValueError(
            f"num_classes is {num_classes} but class_names has {len(class_names)} entries"
        )
    patch_size_px = int(config["patch_size_pixels"])
    spacing_um_px = float(config["spacing_um_px"])
    if patch_size_px <= 0 or spacing_um_px <= 0:
        raise ValueError("patch_size_pixels and spacing_um_px must be > 0")

    tile_size_px = patch_size_px
    input_scale: InputScale = "0-255"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    seen_to_tensor = False
    for index, step in enumerate(config["transform"]):
        step_name = step.get("name")
        arguments = step.get("arguments") or {}
        if step_name == "Resize":
            if seen_to_tensor:
                raise ValueError("Resize after ToTensor is not supported")
            size = arguments.get("size")
            if isinstance(size, list | tuple):
                if len(size) != 2 or int(size[0]) != int(size[1]):
                    raise ValueError(f"transform[{index}] Resize size {size} is not square")
                size = size[0]
            if size is None:
                raise ValueError(f"transform[{index}] Resize has no 'size' argument")
            tile_size_px = int(size)
        elif step_name == "ToTensor":
            seen_to_tensor = True
            input_scale = "0-1"
        elif step_name == "Normalize":
            if not seen_to_tensor:
                raise ValueError("Normalize before ToTensor is not supported")
            mean = _three_floats(arguments.get("mean"), f"transform[{index}] Normalize mean")
            std = _three_floats(arguments.get("std"), f"transform[{index}] Normalize std")
        else:
            raise ValueError(
                f"transform[{index}] {step_name!r} is not supported (Resize, ToTensor, Normalize)"
            )
    if not seen_to_tensor:
        raise ValueError("transform has no ToTensor step; WSInfer models expect one")

    architecture = config.get("architecture")
    mpp = spacing_um_px * patch_size_px / tile_size_px
    # A WSInfer classifier's own decision: the likelier class. With one sigmoid output or two
    # softmax classes that is p(positive) >= 0.5, the default for cohorts nobody calibrated
    # (scoring new slides); with more classes no single threshold is argmax, so none is set.
    default_threshold = 0.5 if num_classes <= 2 else None
    return cls(
        name=name,
        version=version,
        kind="patch_classifier",
        class_names=tuple(class_names),
        tile_size_px=tile_size_px,
        mpp=mpp,
        overlap_px=0,
        normalisation=Normalisation(input_scale=input_scale, mean=mean, std=std),
        output_stride=tile_size_px,
        output_activation="softmax" if num_classes > 1 else "sigmoid",
        description=description
        or f"Imported from a WSInfer config.json (architecture {architecture or 'not stated'}).",
        training_data="Not stated: a WSInfer config.json does not describe training data; "
        "see the model's own documentation.",
        architecture=str(architecture) if architecture else None,
        default_threshold=default_threshold,
    )


def _three_floats(value: Any, what: str) -> tuple[float, float, float]:
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise ValueError(f"{what} must be a list of 3 numbers, got {value!r}")
    a, b, c = (float(v) for v in value)
    return (a, b, c)


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``  - field.path: message``."""
    lines = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"]) or "card"
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"  - {location}: {message}")
    return "\n".join(lines)


def read_card(
    path: Path | str,
    *,
    name: str | None = None,
    version: str | None = None,
) -> ModelCard:
    """Read a SlideFleet card or a WSInfer ``config.json`` from ``path``.

    For a WSInfer config, ``name`` defaults to the name of the directory holding it and
    ``version`` must be given (a WSInfer config has none). For a SlideFleet card, a given
    ``name``/``version`` must agree with the card.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"model card {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"model card {path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"model card {path} must hold a JSON object, got {type(data).__name__}")
    if is_wsinfer_config(data):
        if version is None:
            raise ModelError(
                f"{path} is a WSInfer config.json, which has no version: give one "
                "(e.g. version='1.0', CLI --version 1.0)."
            )
        return ModelCard.from_wsinfer_config(
            data, name=name or path.resolve().parent.name, version=version, source=str(path)
        )
    card = ModelCard.from_mapping(data, source=str(path))
    for field_name, given in (("name", name), ("version", version)):
        if given is not None and given != getattr(card, field_name):
            raise ModelError(
                f"{path} says {field_name} {getattr(card, field_name)!r} but {given!r} was given"
            )
    return card


def model_card_json_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`ModelCard`, as checked in at ``schemas/model-card.schema.json``."""
    return ModelCard.model_json_schema()


def render_model_card_schema() -> str:
    """The schema file's exact text (the same rendering as ``engine.contracts``)."""
    return json.dumps(model_card_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_model_card_schema(path: Path | str = _SCHEMA_PATH) -> Path:
    """Regenerate the checked-in schema file (``python -m engine.contracts --write`` does all)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_model_card_schema(), encoding="utf-8")
    return path
