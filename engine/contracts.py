"""The JSON contracts in ``schemas/``, generated from the code so the two never drift.

``python -m engine.contracts --write`` regenerates them; a test checks the files are current.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from engine.ingest.params import IngestParams
from engine.manifest import ManifestRow
from engine.tables.schemas import TABLE_PARTITIONS, TABLE_SCHEMAS, VIEW_SCHEMAS, schema_to_json

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"


def generated_contracts() -> dict[str, dict[str, Any]]:
    """Relative path under ``schemas/`` → JSON document."""
    from engine.infer.params import InferParams
    from engine.operate.config import JobConfig
    from engine.post.params import PostParams
    from engine.views.params import ViewParams

    contracts: dict[str, dict[str, Any]] = {
        "manifest.schema.json": ManifestRow.model_json_schema(),
        "ingest-params.schema.json": IngestParams.model_json_schema(),
        "infer-params.schema.json": InferParams.model_json_schema(),
        "post-params.schema.json": PostParams.model_json_schema(),
        "view-params.schema.json": ViewParams.model_json_schema(),
        "job-config.schema.json": JobConfig.model_json_schema(),
    }
    try:
        from engine.models.card import ModelCard

        contracts["model-card.schema.json"] = ModelCard.model_json_schema()
    except ImportError:  # pragma: no cover - models package always ships
        pass
    for name, schema in {**TABLE_SCHEMAS, **VIEW_SCHEMAS}.items():
        contracts[f"arrow/{name}.json"] = schema_to_json(schema, TABLE_PARTITIONS.get(name, ()))
    return contracts


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_contracts(directory: Path = SCHEMAS_DIR) -> list[Path]:
    written = []
    for relative, document in generated_contracts().items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(document))
        written.append(path)
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite schemas/ from the code")
    if parser.parse_args().write:
        for written_path in write_contracts():
            print(written_path)
