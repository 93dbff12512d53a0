"""The JSON contracts in schemas/ are generated from the code: they must be current."""

import json

import pytest

from engine.contracts import SCHEMAS_DIR, generated_contracts, render


@pytest.mark.parametrize("relative", sorted(generated_contracts()))
def test_checked_in_contract_matches_the_code(relative: str) -> None:
    path = SCHEMAS_DIR / relative
    assert path.exists(), f"schemas/{relative} is missing: run python -m engine.contracts --write"
    assert path.read_text() == render(generated_contracts()[relative]), (
        f"schemas/{relative} is stale: run python -m engine.contracts --write"
    )


def test_manifest_schema_names_the_public_columns() -> None:
    schema = json.loads((SCHEMAS_DIR / "manifest.schema.json").read_text())
    assert schema["required"] == ["slide_id", "path"]
    assert {"annotation", "split", "label", "mpp"} <= set(schema["properties"])
