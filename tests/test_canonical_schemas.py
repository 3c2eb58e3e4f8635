"""Every canonical schema is a valid JSON Schema, documented, and its examples pass it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft7Validator, FormatChecker

CANONICAL = Path(__file__).resolve().parent.parent / "schemas" / "canonical"
EXPECTED = {"canonical_sale", "return", "canonical_order", "inventory_adjustment", "stock_level",
            "reservation", "shipment", "price"}


def test_the_canonical_model_is_complete() -> None:
    names = {p.name.split(".v")[0] for p in CANONICAL.glob("*.v*.json")}
    assert names >= EXPECTED


@pytest.mark.parametrize("path", sorted(CANONICAL.glob("*.v*.json")), ids=lambda p: p.name)
def test_schema_is_valid_documented_and_its_examples_pass(path: Path) -> None:
    schema = json.loads(path.read_text())
    Draft7Validator.check_schema(schema)
    assert schema.get("title") and len(schema.get("description", "")) > 40
    assert schema.get("examples"), "each canonical schema carries an example"
    validator = Draft7Validator(schema, format_checker=FormatChecker())
    for example in schema["examples"]:
        assert [e.message for e in validator.iter_errors(example)] == []
    text = path.read_text()
    assert '"type": "number"' not in text  # money and quantities are never floats
