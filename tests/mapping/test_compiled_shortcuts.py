"""The compiler's shortcuts change nothing but speed: conforming while building, running without a
per-document decimal context, fast paths, pipe fusion and result types."""

from __future__ import annotations

import decimal
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from integration_bus.errors import MappingError
from integration_bus.mapping import CompiledMapping, FunctionSpec, default_registry
from integration_bus.mapping.functions import BindContext
from integration_bus.mapping.reference import ReferenceInterpreter
from integration_bus.mapping.validation import SchemaStore
from integration_bus.mapping.xref import load_tables
from integration_bus.yamlsafe import read_yaml

Make = Callable[..., CompiledMapping]
# A caller's context nothing may depend on: 5 digits, truncating, no traps.
HOSTILE = decimal.Context(prec=5, rounding=decimal.ROUND_DOWN, traps=[])
MAP = """\
    output: {type: a.b%s}
    steps:
      - map:
          int_total: "total | round(0)"
          num_total: "total * 3"
          text_total: "total | decimal"
          int_text: "count | integer"
          nested: {n: "total + 0.004", extra: "count | integer", deep: {p: "price"}}
          lines:
            $each: lines
            $map: {price: "price * qty | round(2)", qty: qty, sku: "sku | upper"}
          raw_lines: {$each: lines}
          either: {$each: lines, $map: price}
          loose: "customer"
          union: "total"
          maybe?: "missing"
          day: "'2024-03-01' | date"
          note:
            $when: "total > 1"
            $value: "note | trim"
          const: [1, "total", {x: "price"}]
"""
SCHEMA = {
    "type": "object", "additionalProperties": True, "properties": {
        "int_total": {"type": "integer"}, "num_total": {"type": "number"},
        "text_total": {"type": "string"}, "int_text": {"type": "integer"},
        "nested": {"type": "object", "properties": {"n": {"type": "number"}},
                   "additionalProperties": {"type": ["integer", "object"]}},
        "lines": {"type": "array", "items": {"type": "object",
                                             "properties": {"price": {"type": "number"}}}},
        "raw_lines": {"type": "array", "items": {"type": "object"}},
        "either": {"type": ["array", "number"]},
        "loose": {"type": ["string", "object"]},
        "union": {"anyOf": [{"type": "number"}, {"type": "string"}]},
        "maybe": {"type": ["number", "null"]},
        "day": {"type": "string", "format": "date"},
        "const": {"type": "array"},
    },
}
PAYLOAD = {"total": 19.99, "count": 3, "price": "0.10", "note": " hi ",
           "customer": {"id": 7, "balance": 1.5, "tags": ["a"]},
           "lines": [{"price": 19.99, "qty": 3, "sku": "a-1"}, {"price": "4.5", "qty": 1}]}


def _reference(mapping: CompiledMapping) -> ReferenceInterpreter:
    root = Path(mapping.info.file).parent
    return ReferenceInterpreter(read_yaml(Path(mapping.info.file))[0], registry=default_registry(),
                                bind=BindContext(load_tables(root / "xref"), {}),
                                schemas=SchemaStore(root / "schemas"))


@pytest.mark.parametrize("schema", [None, "out@1"])
def test_conforming_while_building_equals_conforming_afterwards(make_mapping: Make,
                                                                 schema: str | None) -> None:
    # Given the same map, last (conformed as it is built) and followed by a filter (conformed
    # afterwards), with the output schema or the plain default
    suffix = f", schema: {schema}" if schema else ""
    schemas = {"out.v1.json": json.dumps(SCHEMA)}
    last = make_mapping(MAP % suffix, schemas=schemas, name="last.yaml")
    not_last = make_mapping(MAP % suffix + "      - filter: 'true'\n", schemas=schemas,
                            name="not_last.yaml")
    assert last.steps[-1].conformed and not not_last.steps[0].conformed
    # When both run, under a caller's decimal context that must not matter
    with decimal.localcontext(HOSTILE):
        outputs = last.run(PAYLOAD)
        afterwards = not_last.run(PAYLOAD)
    # Then they agree with each other and with the reference interpreter, to the type
    assert outputs == afterwards == _reference(last).run(PAYLOAD)
    assert _types(outputs) == _types(afterwards)
    doc = outputs[0][1]
    assert doc["lines"][0]["price"] == (Decimal("59.97") if schema else "59.97")
    assert doc["int_total"] == (20 if schema else "20")
    assert doc["text_total"] == "19.99" and doc["day"] == "2024-03-01"


def _types(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_types(v) for v in value]
    return type(value).__name__


def test_outputs_never_share_containers_with_the_input(make_mapping: Make) -> None:
    mapping = make_mapping(MAP % "")
    payload = json.loads(json.dumps(PAYLOAD))
    doc = mapping.run(payload)[0][1]
    doc["loose"]["tags"].append("changed")
    doc["raw_lines"][0]["qty"] = 0
    assert payload == PAYLOAD


def test_no_decimal_context_is_installed_unless_something_needs_it(make_mapping: Make) -> None:
    plain = make_mapping(MAP % "", name="plain.yaml")
    # A function that is not marked context_free computes in the ambient context ...
    third = FunctionSpec("third", lambda value: Decimal(value) / 3, 1, 1, "x | third", "x / 3")
    custom = make_mapping("""\
        output: {type: a.b}
        steps: [{map: {x: "1 | third"}}]
        """, name="custom.yaml", registry=default_registry().with_functions([third]))
    with decimal.localcontext(HOSTILE):
        # ... so that mapping runs inside the language's context, with its 34 digits
        assert custom.run({}) == [("", {"x": "0." + "3" * 34})]
        assert plain.run(PAYLOAD)[0][1]["num_total"] == "59.97"
    assert not plain._decimal_context and custom._decimal_context


def test_fast_paths_and_pipe_fusion_keep_errors_and_nulls(evaluate: Callable[..., Any]) -> None:
    assert evaluate("a | upper", {"a": "x"}) == "X"
    assert evaluate("a | upper", {"a": 12}) == "12"
    with pytest.raises(MappingError, match="boolean where a number"):  # no fast path for bool
        evaluate("a | integer", {"a": True})
    assert evaluate("a.b | string", {"a": {"b": 5}}) == "5"
    assert evaluate("a | decimal | round(1)", {"a": 7}) == Decimal("7.0")
    assert evaluate("a | decimal | round(1)", {}) is None
    assert evaluate("a | is_null | string", {}) == "true"
    with pytest.raises(MappingError, match="'x' is not a number"):
        evaluate("a | decimal | round(1)", {"a": "x"})
    with pytest.raises(MappingError, match="cannot read field 'b' of a list"):
        evaluate("a.b | upper", {"a": []})


def test_a_fast_path_for_null_is_refused() -> None:
    with pytest.raises(ValueError, match="null"):
        FunctionSpec("f", str, 1, 1, "x | f", "f", fast={type(None): str})
