"""Schemas: the draft ``$schema`` names is the draft both validators use (none: 2020-12), formats
take ASCII digits only where their RFC says so, and the compiled validator has the last word."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from integration_bus.errors import ConfigError, MappingError
from integration_bus.mapping.drafts import DRAFTS
from integration_bus.mapping.validation import SchemaStore, load_schema


def verdict(schema: dict[str, Any], document: Any) -> bool:
    try:
        load_schema(schema).validate(document)
    except MappingError:
        return False
    return True


# a keyword per draft that the draft before it did not have (or read otherwise)
NEW_KEYWORDS = [
    ({"prefixItems": [{"type": "integer"}]}, ["x"]),
    ({"type": "object", "properties": {"a": {}}, "unevaluatedProperties": False}, {"b": 1}),
    ({"dependentRequired": {"a": ["b"]}}, {"a": 1}),
    ({"contains": {"type": "integer"}, "minContains": 2}, [1, "x"]),
]


@pytest.mark.parametrize(("keywords", "invalid"), NEW_KEYWORDS)
def test_2020_12_keywords_are_enforced_with_or_without_schema(keywords: dict[str, Any],
                                                            invalid: Any) -> None:
    latest = {"$schema": "https://json-schema.org/draft/2020-12/schema", **keywords}
    assert not verdict(latest, invalid)
    assert not verdict(keywords, invalid)  # no $schema: read as 2020-12 by both validators
    assert load_schema(keywords).draft.name == "2020-12"


def test_draft_07_is_read_as_draft_07() -> None:
    # in draft-07 an array "items" is the tuple form, and additionalItems closes it
    schema = {"$schema": "http://json-schema.org/draft-07/schema#",
              "items": [{"type": "integer"}], "additionalItems": False}
    assert load_schema(schema).draft.name == "draft-07"
    assert verdict(schema, [1]) and not verdict(schema, [1, 2]) and not verdict(schema, ["x"])
    # prefixItems means nothing to draft-07: an unknown keyword
    assert verdict({"$schema": DRAFTS[2].uri, "prefixItems": [{"type": "integer"}]}, ["x"])


def test_an_unknown_schema_draft_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        load_schema({"$schema": "http://json-schema.org/draft-07/schema-typo#"}, file="x.json")
    assert "is not a JSON Schema draft" in caught.value.message
    assert "draft-07/schema#" in str(caught.value.context["hint"])
    assert caught.value.context["file"] == "x.json"


@pytest.mark.parametrize("ref", ["http://localhost:1234/integer.json", "other.json#/a",
                                 "https://json-schema.org/draft/2020-12/meta/nonexistent"])
def test_a_ref_leaving_the_schema_is_refused_without_fetching(ref: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_schema({"$ref": ref}, file="x.json")
    assert "self-contained" in str(caught.value.context["hint"])


def test_refs_inside_the_schema_by_id_and_anchor_work() -> None:
    schema = {"$id": "https://bus.example/order.json", "$ref": "line.json",
              "$defs": {"line": {"$id": "line.json", "$ref": "order.json#qty"},
                        "qty": {"$anchor": "qty", "type": "integer"}}}
    assert verdict(schema, 3) and not verdict(schema, "3")


# a Bengali, an Arabic-Indic and a fullwidth four in place of an ASCII 4
FOREIGN_FOURS = ["\u09ea", "\u0664", "\uff14"]
DIGIT_FORMATS = {
    "date": "2024-01-04", "date-time": "2024-01-04T10:00:00Z", "time": "10:04:00Z",
    "duration": "P4D", "ipv4": "192.168.0.4", "ipv6": "::4",
    "uuid": "2eb8aa08-aa98-11ea-b4aa-73b441d16384", "relative-json-pointer": "4/a",
    "uri": "http://a.example:8084/", "uri-reference": "//a.example:4/", "iri": "http://a:4/",
    "hostname": "a4.example", "email": "a@b4.example",
}


@pytest.mark.parametrize("fmt", list(DIGIT_FORMATS))
def test_formats_take_ascii_digits_only(fmt: str) -> None:
    schema = {"properties": {"v": {"type": "string", "format": fmt}}}
    good = DIGIT_FORMATS[fmt]
    assert verdict(schema, {"v": good}), good
    for four in FOREIGN_FOURS:
        bad = good.replace("4", four)
        with pytest.raises(MappingError) as caught:
            load_schema(schema).validate({"v": bad})
        assert caught.value.context["field"] == "v", caught.value


def test_idn_hostnames_take_the_digits_idna_allows() -> None:
    # IDNA2008 allows a label of Bengali letters and digits; fullwidth digits are compatibility
    # forms it disallows (jsonschema-rs alone would map them to ASCII and accept them)
    schema = {"format": "idn-hostname"}
    assert verdict(schema, "\u0995\u09ea.example")
    assert not verdict(schema, "a\uff14.example")


def test_the_error_names_the_field_in_jsonschema_words() -> None:
    schema = {"$schema": DRAFTS[2].uri, "type": "object", "required": ["lines"], "properties": {
        "lines": {"type": "array", "items": {"properties": {"qty": {"type": "integer"}}}}}}
    with pytest.raises(MappingError) as caught:
        load_schema(schema, ref="order@1").validate({"lines": [{"qty": 1}, {"qty": "two"}]})
    assert caught.value.context["field"] == "lines[1].qty"
    assert "'two' is not of type 'integer'" in caught.value.message
    assert caught.value.context["hint"] == "schema rule: properties/lines/items/properties/qty/type"


def test_the_compiled_validator_decides_when_the_two_disagree() -> None:
    # an ECMA-262 \d is ASCII only; Python's re (jsonschema) would take a Bengali digit
    schema = {"properties": {"code": {"type": "string", "pattern": "^\\d{4}$"}}}
    with pytest.raises(MappingError) as caught:
        load_schema(schema).validate({"code": "123\u09ea"})
    assert caught.value.context["field"] == "code"


def test_decimals_are_numbers_and_python_only_values_go_to_jsonschema() -> None:
    schema = {"properties": {"total": {"type": "number", "minimum": 0}}}
    assert verdict(schema, {"total": Decimal("59.97")})
    assert not verdict(schema, {"total": Decimal("-1")})
    # a dict with an int key is no JSON: jsonschema alone judges it
    assert not verdict({"type": "object", "required": ["a"]}, {1: "x"})
    assert verdict({"type": "object", "required": ["a"]}, {1: "x", "a": 2})


def test_schema_files_in_the_store_use_the_same_path(tmp_path: Path) -> None:
    (tmp_path / "order.v1.json").write_text(json.dumps(
        {"type": "object", "dependentRequired": {"total": ["currency"]}}))
    (tmp_path / "remote.v1.json").write_text(json.dumps({"$ref": "http://x.example/s.json"}))
    store = SchemaStore(tmp_path)
    with pytest.raises(MappingError):
        store.get("order@1").validate({"total": "1.00"})
    with pytest.raises(ConfigError) as caught:
        store.get("remote@1")
    assert caught.value.context["file"] == str(tmp_path / "remote.v1.json")
