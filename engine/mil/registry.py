"""MIL models as registered model versions: ``ROOT/mil/models/<name>/<version>/``.

Each version holds ``model.pt`` (TorchScript, any bag size) and ``card.json`` (:class:`MilCard`);
its ``model_id`` is ``sha256(sha256(file) || sha256(canonical card))[:16]``, as for tile models.
A version is written once: registering different content under it is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from engine.errors import ModelError
from engine.mil.params import BagParams
from engine.models.card import is_path_safe
from engine.models.registry import version_sort_key
from engine.store import FleetLayout

MODEL_FILE = "model.pt"
CARD_FILE = "card.json"


class MilCard(BaseModel):
    """What a MIL model decides, from which bags, and how it was trained and selected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: str
    kind: str = Field("gated_attention_mil", description="Ilse et al. 2018, gated attention.")
    class_names: tuple[str, ...] = Field(min_length=2)
    positive_class: str = Field(description="Class whose probability is the slide score (AUC).")
    embedding_dim: int = Field(ge=1)
    features_model: str = Field(description="Extractor reference the bags come from.")
    features_model_id: str
    score_model_id: str | None = Field(None, description="Model whose map picked top-K tiles.")
    bags: BagParams
    training: dict[str, Any] = Field(
        description="Hyper-parameters, slides per split, the kept epoch and its calibration loss."
    )
    description: str
    training_data: str
    intended_use: str = (
        "Slide-level answers on slides like the training cohort, checked against the "
        "attention map; not for clinical use without validation."
    )

    def canonical_json(self) -> bytes:
        payload = self.model_dump(mode="json")
        return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class RegisteredMil:
    card: MilCard
    model_id: str
    path: Path

    @property
    def ref(self) -> str:
        return self.card.ref

    def load(self) -> torch.jit.ScriptModule:
        return torch.jit.load(str(self.path), map_location="cpu")


def mil_model_id(model_path: Path, card: MilCard) -> str:
    file_digest = hashlib.sha256(model_path.read_bytes()).digest()
    card_digest = hashlib.sha256(card.canonical_json()).digest()
    return hashlib.sha256(file_digest + card_digest).hexdigest()[:16]


def export_mil(module: torch.nn.Module, path: Path, *, embedding_dim: int) -> Path:
    """Trace to TorchScript with reproducible bytes (any bag size: the graph has no shape logic)."""
    example = torch.zeros(7, embedding_dim)
    with torch.no_grad():
        traced = torch.jit.trace(module.eval(), example)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.pt"
        traced.save(str(raw))
        with (
            zipfile.ZipFile(raw) as source,
            zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target,
        ):
            for info in source.infolist():
                if not info.filename.endswith(".debug_pkl"):
                    target.writestr(
                        zipfile.ZipInfo(info.filename, (1980, 1, 1, 0, 0, 0)), source.read(info)
                    )
    return path


class MilRegistry:
    """MIL models under ``ROOT/mil/models/``."""

    def __init__(self, root: Path | str) -> None:
        self.models_dir = FleetLayout(Path(root)).root / "mil" / "models"

    def next_version(self, name: str) -> str:
        versions = [m.card.version for m in self.versions(name)]
        numbers = [int(v) for v in versions if v.isdigit()]
        return str(max(numbers, default=0) + 1)

    def add(self, module: torch.nn.Module, card: MilCard) -> RegisteredMil:
        for value, what in ((card.name, "name"), (card.version, "version")):
            if not is_path_safe(value):
                raise ModelError(f"MIL model {what} {value!r} is not a safe directory name")
        final = self.models_dir / card.name / card.version
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{card.version}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            export_mil(module, tmp / MODEL_FILE, embedding_dim=card.embedding_dim)
            (tmp / CARD_FILE).write_text(card.model_dump_json(indent=2) + "\n", encoding="utf-8")
            new_id = mil_model_id(tmp / MODEL_FILE, card)
            if final.exists():
                existing = self._read(final)
                if existing.model_id != new_id:
                    raise ModelError(
                        f"MIL model {card.ref} is already registered with model_id "
                        f"{existing.model_id}; this one is {new_id}: use a new version."
                    )
                return existing
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self._read(final)

    def versions(self, name: str) -> list[RegisteredMil]:
        directory = self.models_dir / name
        if not directory.is_dir():
            return []
        found = [
            self._read(d) for d in directory.iterdir() if d.is_dir() and not d.name.startswith(".")
        ]
        return sorted(found, key=lambda m: version_sort_key(m.card.version))

    def resolve(self, ref: str) -> RegisteredMil:
        name, _, version = ref.partition(":")
        candidates = self.versions(name)
        if not candidates:
            raise ModelError(
                f"no MIL model named {name!r} under {self.models_dir}; train one "
                "with `slidefleet mil train`."
            )
        if not version:
            return candidates[-1]
        for candidate in candidates:
            if candidate.card.version == version:
                return candidate
        raise ModelError(
            f"MIL model {name!r} has no version {version!r}; registered: "
            f"{[m.card.version for m in candidates]}"
        )

    def _read(self, directory: Path) -> RegisteredMil:
        try:
            card = MilCard.model_validate_json((directory / CARD_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"MIL registry entry {directory} is unreadable: {exc}") from None
        path = directory / MODEL_FILE
        return RegisteredMil(card=card, model_id=mil_model_id(path, card), path=path)
