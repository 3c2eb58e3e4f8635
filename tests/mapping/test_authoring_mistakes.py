"""Ten (and a few more) typical authoring mistakes: each is refused at load with file:line:col,
the field, and a hint that says how to fix it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from integration_bus.errors import ConfigError
from integration_bus.mapping import load_mapping

INPUT_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "status": {"type": "string"},
        "customer": {"type": "object", "properties": {"email": {"type": "string"}}},
        "lines": {"type": "array", "items": {"type": "object", "properties": {
            "sku": {"type": "string"}, "qty": {"type": "integer"}}}},
    },
}
HEADER = """\
name: t
input:
  type: shop.order
  schema: order_in@1
output:
  type: order.created
steps:
"""
# (id, steps text, marker: the text the reported column must point at, message part, hint part)
MISTAKES = [
    ("typo in a step kind", "  - mapp:\n      id: id\n", "mapp", "unknown step 'mapp'",
     "did you mean 'map'?"),
    ("typo in a function", "  - map:\n      sku: lines[0].sku | uper\n", "uper",
     "unknown function 'uper'", "did you mean 'upper'?"),
    ("typo in a field", "  - map:\n      email: custmer.email\n", "custmer",
     "unknown field 'custmer'", "did you mean 'customer'?"),
    ("text constant without quotes", "  - map:\n      currency: EUR\n", "EUR",
     "unknown field 'EUR'", "quote it inside the expression"),
    ("single = in a comparison", "  - filter: \"status = 'paid'\"\n", "= 'paid'",
     "unexpected character '='", "compare with '=='"),
    ("a float in YAML", "  - map:\n      rate: 0.19\n", "0.19",
     "would be read as a binary float", "quote it"),
    ("unknown xref table", "  - map:\n      sku: \"lines[0].sku | xref('skus')\"\n", "'skus'",
     "unknown xref table 'skus'", "did you mean 'sku'?"),
    ("rounding mode spelt with a dash", "  - map:\n      x: \"id | round(2, 'half-up')\"\n",
     "'half-up'", "unknown rounding mode", "did you mean 'half_up'?"),
    ("typo in a directive", "  - map:\n      skus:\n        $eachh: lines\n", "$eachh",
     "unknown directive '$eachh'", "did you mean '$each'?"),
    ("a method call", "  - map:\n      sku: lines[0].sku.upper()\n", "(",
     "unexpected '('", "apply functions with a pipe"),
    ("typo in a time zone", "  - map:\n      t: \"status | to_tz('Europe/Berln')\"\n",
     "'Europe/Berln'", "unknown time zone", "did you mean 'Europe/Berlin'"),
    ("wrong number of arguments", "  - map:\n      x: id | round(1, 'up', 3)\n", "round",
     "round() does not take 3 argument(s)", "usage: number | round(scale?, mode?)"),
    ("$index outside a loop", "  - map:\n      n: $index\n", "$index",
     "$index is only defined inside", None),
    ("dropping a field that does not exist", "  - drop: [stauts]\n", "stauts",
     "unknown field 'stauts'", "did you mean 'status'?"),
    ("unknown key in a step", "  - split:\n      eahc: lines\n", "eahc", "unknown key 'eahc'",
     "did you mean 'each'?"),
]


def _write(tmp_path: Path, steps: str, header: str = HEADER) -> Path:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "order_in.v1.json").write_text(json.dumps(INPUT_SCHEMA))
    (tmp_path / "xref").mkdir()
    (tmp_path / "xref" / "sku.csv").write_text("code,sku\nA,B\n")
    path = tmp_path / "t.yaml"
    path.write_text(header + steps)
    return path


@pytest.mark.parametrize(("steps", "marker", "message", "hint"),
                         [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_mistake_is_located_with_a_hint(tmp_path: Path, steps: str, marker: str, message: str,
                                        hint: str | None) -> None:
    path = _write(tmp_path, steps)
    with pytest.raises(ConfigError) as info:
        load_mapping(path, xref_dir=tmp_path / "xref", schemas_dir=tmp_path / "schemas")
    error = info.value
    lines = path.read_text().splitlines()
    # The error points at the line and column of the marker text.
    line = error.context["line"]
    column = error.context["column"]
    assert lines[line - 1][column - 1:].startswith(marker), (str(error), lines[line - 1])
    assert error.context["file"] == str(path)
    assert error.context.get("field")
    assert message in error.message
    if hint is not None:
        assert hint in error.context["hint"]
    assert str(error).startswith(f"{path}:{line}:{column}: ")


@pytest.mark.parametrize(("text", "message", "line"), [
    ("name: t\noutput: {type: a.b}\nsteps:\n  - map: &x {a: b}\n  - map: *x\n", "anchors", 4),
    ("name: t\noutput: !custom {type: a.b}\nsteps: []\n", "tag", 2),
    ("name: t\noutput:\n  type: a.b\n  type: c.d\nsteps:\n  - map: {a: b}\n", "duplicate", 4),
    ("name: t\nsteps:\n  - map: {a: b}\n", "missing required key 'output'", 1),
    ("name: t\noutput: {typ: a.b}\nsteps:\n  - map: {a: b}\n", "unknown key 'typ'", 2),
    ("name: t\noutput: {type: a.b}\nsteps:\n\t- map: {a: b}\n", "invalid YAML", 4),
])
def test_unsafe_or_malformed_yaml_is_refused(tmp_path: Path, text: str, message: str,
                                             line: int) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as info:
        load_mapping(path, xref_dir=tmp_path / "empty", schemas_dir=tmp_path / "empty")
    assert message in str(info.value)
    assert info.value.context["line"] == line


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("name: t\n" + "# padding\n" * 200_000)
    with pytest.raises(ConfigError, match="the limit is"):
        load_mapping(path)


def test_unknown_schema_reference_suggests_the_close_one(tmp_path: Path) -> None:
    path = _write(tmp_path, "  - map: {a: id}\n", HEADER.replace("order_in@1", "order_inn@1"))
    with pytest.raises(ConfigError) as info:
        load_mapping(path, xref_dir=tmp_path / "xref", schemas_dir=tmp_path / "schemas")
    assert "did you mean 'order_in@1'?" in info.value.context["hint"]
    assert info.value.context["line"] == 4
