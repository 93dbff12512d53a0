"""The model registry under a fleet root: ``ROOT/models/<name>/<version>/{model.pt, card.json}``.

Adding is atomic (the entry is written into a hidden temporary directory beside it and renamed
into place), validated (the file must load safely and produce the output its card promises on a
test batch) and idempotent (re-adding the same file and card is a no-op). A different model under
an existing name and version is refused: bump the version instead, so that every ``model_id``
keyed output stays attributable.
"""

from __future__ import annotations

import builtins
import logging
import os
import re
import shutil
import stat
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.errors import ModelError, SlideFleetError
from engine.models.adapters import adapter_for, normalise
from engine.models.card import ModelCard, is_path_safe, is_wsinfer_config, read_card
from engine.models.loading import load_model, model_id
from engine.store.layout import FleetLayout

log = logging.getLogger(__name__)

MODEL_FILE_NAME = "model.pt"
CARD_FILE_NAME = "card.json"
_TEST_BATCH_SIZE = 3  # not 2, so a model traced with a batch of 2 that baked it in fails


@dataclass(frozen=True)
class RegisteredModel:
    """A model in the registry: its card, content address and file."""

    name: str
    version: str
    model_id: str
    card: ModelCard
    path: Path

    @property
    def ref(self) -> str:
        """``name:version``."""
        return f"{self.name}:{self.version}"

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def card_path(self) -> Path:
        return self.directory / CARD_FILE_NAME

    def load(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """Load the model file safely (see :func:`engine.models.loading.load_model`)."""
        return load_model(self.path, device=device)


CardSource = ModelCard | Path | str | Mapping[str, Any]


def _copy_model_file(source: Path, target: Path) -> None:
    """Copy the user's model file; refuse a folder, device or pipe without reading from it."""
    try:
        info = source.stat()
    except FileNotFoundError:
        raise ModelError(f"model file {source} does not exist") from None
    except OSError as exc:
        raise ModelError(f"model file {source} cannot be read: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise ModelError(f"model file {source} is not a regular file (a folder, device or pipe)")
    try:
        shutil.copyfile(source, target)
    except OSError as exc:
        raise ModelError(
            f"model file {source} cannot be copied into the registry: {exc.strerror or exc}"
        ) from exc


class ModelRegistry:
    """Models registered under ``ROOT/models/``."""

    def __init__(self, root: Path | str) -> None:
        self.root = FleetLayout(Path(root)).root
        self.models_dir = FleetLayout(self.root).models_dir

    def add(
        self,
        model_path: Path | str,
        card: CardSource,
        *,
        name: str | None = None,
        version: str | None = None,
        check_output: bool = True,
    ) -> RegisteredModel:
        """Register a TorchScript/torch.export file with its card.

        ``card`` is a :class:`ModelCard`, a path to a card JSON or a WSInfer ``config.json``, or
        the parsed JSON of either. ``name``/``version`` name a WSInfer model (it has none) and
        must agree with a SlideFleet card. With ``check_output`` the model is run on a small
        test batch and its output validated against the card before anything is registered.
        """
        model_path = Path(model_path)
        resolved_card = _resolve_card(card, model_path, name=name, version=version)
        final_dir = self._entry_dir(resolved_card.name, resolved_card.version)
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = final_dir.parent / f".{resolved_card.version}.tmp-{uuid.uuid4().hex[:12]}"
        tmp_dir.mkdir()
        try:
            # Validate and hash the copy, so what is registered is exactly what was checked.
            tmp_model = tmp_dir / MODEL_FILE_NAME
            _copy_model_file(model_path, tmp_model)
            try:
                new_id = model_id(tmp_model, resolved_card)
                existing = self._existing(final_dir)
                if existing is not None:
                    return self._same_or_refuse(existing, new_id)
                module = load_model(tmp_model)
                if check_output:
                    check_model_output(module, resolved_card)
                from engine.explain.loading import check_explain_layer

                check_explain_layer(tmp_model, resolved_card)
            except ModelError as exc:  # name the user's file, not the private copy
                raise ModelError(str(exc).replace(str(tmp_model), str(model_path))) from exc
            (tmp_dir / CARD_FILE_NAME).write_text(resolved_card.to_json(), encoding="utf-8")
            try:
                os.replace(tmp_dir, final_dir)
            except OSError:
                existing = self._existing(final_dir)  # another process registered it meanwhile
                if existing is None:
                    raise
                return self._same_or_refuse(existing, new_id)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        registered = self._read(final_dir)
        log.info(
            "registered model %s (model_id %s) at %s",
            registered.ref,
            registered.model_id,
            final_dir,
        )
        return registered

    def list(self) -> list[RegisteredModel]:
        """Every registered model, by name then version (oldest first)."""
        if not self.models_dir.is_dir():
            return []
        found: list[RegisteredModel] = []
        for name_dir in sorted(self.models_dir.iterdir()):
            if not name_dir.name.startswith(".") and name_dir.is_dir():
                found.extend(self._versions(name_dir))
        return found

    def resolve(self, ref: str) -> RegisteredModel:
        """``"name"`` (latest version) or ``"name:version"`` -> the registered model."""
        name, _, version = ref.partition(":")
        if not is_path_safe(name) or (version and not is_path_safe(version)):
            raise ModelError(f"{ref!r} is not a model reference: use 'name' or 'name:version'")
        name_dir = self.models_dir / name
        candidates = self._versions(name_dir) if name_dir.is_dir() else []
        if not candidates:
            known = sorted({m.name for m in self.list()})
            raise ModelError(
                f"no model named {name!r} in {self.models_dir}; registered: {known or 'none'}"
            )
        if not version:
            return candidates[-1]
        for candidate in candidates:
            if candidate.version == version:
                return candidate
        raise ModelError(
            f"model {name!r} has no version {version!r}; registered versions: "
            f"{[m.version for m in candidates]}"
        )

    # ------------------------------------------------------------------------------------------

    def _versions(self, name_dir: Path) -> builtins.list[RegisteredModel]:
        """The readable versions under one name directory, oldest first."""
        found: builtins.list[RegisteredModel] = []
        for version_dir in name_dir.iterdir():
            if version_dir.name.startswith(".") or not version_dir.is_dir():
                continue  # temporaries of an add in progress or killed
            try:
                found.append(self._read(version_dir))
            except SlideFleetError as exc:
                log.warning("skipping unreadable registry entry %s: %s", version_dir, exc)
        found.sort(key=lambda m: version_sort_key(m.version))
        return found

    def _entry_dir(self, name: str, version: str) -> Path:
        # name and version are validated path-safe by ModelCard.
        return self.models_dir / name / version

    def _existing(self, entry_dir: Path) -> RegisteredModel | None:
        return self._read(entry_dir) if entry_dir.exists() else None

    def _same_or_refuse(self, existing: RegisteredModel, new_id: str) -> RegisteredModel:
        if existing.model_id == new_id:
            log.info("model %s is already registered (model_id %s)", existing.ref, new_id)
            return existing
        raise ModelError(
            f"model {existing.ref} is already registered with model_id {existing.model_id}, and "
            f"this file and card give {new_id}: register it under a new version instead."
        )

    def _read(self, entry_dir: Path) -> RegisteredModel:
        card = read_card(entry_dir / CARD_FILE_NAME)
        if (card.name, card.version) != (entry_dir.parent.name, entry_dir.name):
            raise ModelError(
                f"registry entry {entry_dir} holds a card for {card.ref}; the directory and the "
                "card must agree"
            )
        path = entry_dir / MODEL_FILE_NAME
        return RegisteredModel(
            name=card.name,
            version=card.version,
            model_id=model_id(path, card),
            card=card,
            path=path,
        )


def check_model_output(module: torch.nn.Module, card: ModelCard) -> None:
    """Run ``module`` on a small deterministic batch; raise if its output breaks the card."""
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, size=(_TEST_BATCH_SIZE, card.tile_size_px, card.tile_size_px, 3))
    batch = normalise(tiles.astype(np.uint8), card)
    try:
        with torch.inference_mode():
            raw = module(batch)
    except Exception as exc:
        raise ModelError(
            f"model {card.ref} failed on a test batch of shape {tuple(batch.shape)} "
            f"(tile_size_px {card.tile_size_px} from its card): {_first_line(exc)}"
        ) from exc
    adapter_for(card)(raw, _TEST_BATCH_SIZE)


def _resolve_card(
    card: CardSource, model_path: Path, *, name: str | None, version: str | None
) -> ModelCard:
    if isinstance(card, ModelCard):
        resolved = card
    elif isinstance(card, str | Path):
        return read_card(card, name=name, version=version)
    elif is_wsinfer_config(card):
        if version is None:
            raise ModelError(
                "a WSInfer config carries no version: pass version=... (CLI: --version); the "
                "name defaults to the model file's directory"
            )
        return ModelCard.from_wsinfer_config(
            card, name=name or model_path.resolve().parent.name, version=version
        )
    else:
        resolved = ModelCard.from_mapping(card)
    for field_name, given in (("name", name), ("version", version)):
        if given is not None and given != getattr(resolved, field_name):
            raise ModelError(
                f"the card says {field_name} {getattr(resolved, field_name)!r} but {given!r} was given"
            )
    return resolved


_NUMERIC_RELEASE = re.compile(r"^[vV]?(\d+(?:\.\d+)*)(.*)$")
_NATURAL_TOKEN = re.compile(r"\d+|\D+")


def version_sort_key(version: str) -> tuple[Any, ...]:
    """Order versions naturally: ``1.9 < 1.10``, ``1.0.0-rc1 < 1.0.0``, ``v2 == 2``.

    A numeric release (``1.2.3``, optionally prefixed ``v``) followed by any suffix is a
    pre-release of that number; versions without a leading number sort before all numeric
    ones, among themselves in natural order.
    """
    match = _NUMERIC_RELEASE.match(version)
    if match is None:
        return (0, (), 0, _natural(version), version)
    numbers = [int(part) for part in match.group(1).split(".")]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()  # 1.0 and 1.0.0 are the same release
    suffix = match.group(2)
    return (1, tuple(numbers), 0 if suffix else 1, _natural(suffix), version)


def _natural(text: str) -> tuple[tuple[int, int, str], ...]:
    return tuple(
        (0, int(token), "") if token.isdigit() else (1, 0, token)
        for token in _NATURAL_TOKEN.findall(text)
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
