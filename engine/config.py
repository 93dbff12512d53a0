"""Job config files (YAML, TOML or JSON): one section per stage, validated with clear errors."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from engine.errors import ConfigError

P = TypeVar("P", bound=BaseModel)


def read_config_file(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        if path.suffix.lower() in {".yaml", ".yml"}:
            data = yaml.safe_load(text) or {}
        elif path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections, got {type(data).__name__}."
        )
    return data


def parse_section(
    data: dict[str, Any], section: str, model: type[P], *, source: str = "config"
) -> P:
    """Validate ``data[section]`` as ``model``; errors name the bad field, e.g. ``ingest.tissue.target_mpp``."""
    try:
        return model.model_validate(data.get(section) or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{section}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from exc


def load_stage_params(path: Path | str | None, section: str, model: type[P]) -> P:
    """Parameters of one stage from a config file, or the defaults when no file is given."""
    if path is None:
        return model()
    return parse_section(read_config_file(path), section, model, source=str(path))
