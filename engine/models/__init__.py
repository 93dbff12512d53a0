"""Models: cards, safe loading, the registry under ``ROOT/models/``, output adapters, demo models.

A model is a TorchScript or ``torch.export`` file plus a :class:`ModelCard`; its ``model_id`` is
the hash of both. See ``schemas/model-card.schema.json`` for the card contract.
"""

from engine.models.adapters import (
    AnomalyScorerAdapter,
    EmbeddingExtractorAdapter,
    OutputAdapter,
    PatchClassifierAdapter,
    PixelSegmenterAdapter,
    adapter_for,
    crop_overlap,
    normalise,
)
from engine.models.card import (
    MODEL_KINDS,
    ModelCard,
    ModelKind,
    Normalisation,
    is_wsinfer_config,
    model_card_json_schema,
    read_card,
    render_model_card_schema,
    write_model_card_schema,
)
from engine.models.demo import make_demo_models
from engine.models.loading import (
    ExportedProgramModule,
    ModelFormat,
    detect_model_format,
    load_model,
    model_id,
)
from engine.models.registry import (
    ModelRegistry,
    RegisteredModel,
    check_model_output,
    version_sort_key,
)
from engine.models.scoring import ScoringModel

__all__ = [
    "MODEL_KINDS",
    "AnomalyScorerAdapter",
    "EmbeddingExtractorAdapter",
    "ExportedProgramModule",
    "ModelCard",
    "ModelFormat",
    "ModelKind",
    "ModelRegistry",
    "Normalisation",
    "OutputAdapter",
    "PatchClassifierAdapter",
    "PixelSegmenterAdapter",
    "RegisteredModel",
    "ScoringModel",
    "adapter_for",
    "check_model_output",
    "crop_overlap",
    "detect_model_format",
    "is_wsinfer_config",
    "load_model",
    "make_demo_models",
    "model_card_json_schema",
    "model_id",
    "normalise",
    "read_card",
    "render_model_card_schema",
    "version_sort_key",
    "write_model_card_schema",
]
