"""Expressions cannot reach Python: injection attempts are refused at load with a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from integration_bus.errors import ConfigError
from integration_bus.mapping import load_mapping
from integration_bus.mapping.grammar import MAX_DEPTH, ExpressionError, Parser

ATTEMPTS = [
    ("__import__('os').system('id')", "'__import__' is not allowed"),
    ("().__class__.__bases__[0].__subclasses__()", "'__class__' is not allowed"),
    ("x.__class__", "'__class__' is not allowed"),
    ("x['__globals__']", "'__globals__' is not allowed"),
    ("__builtins__", "'__builtins__' is not allowed"),
    ("'abc'.upper", "field access on a literal"),
    ("'abc'.join(x)", "unexpected '('"),
    ("x.upper()", "unexpected '('"),
    ("upper.__call__", "'__call__' is not allowed"),
    ("eval('1')", "unknown function 'eval'"),
    ("exec('1')", "unknown function 'exec'"),
    ("getattr(x, 'y')", "unknown function 'getattr'"),
    ("lambda: 1", "unexpected"),
    ("9 ** 999999999", "unexpected '*'"),
    ("1e999999999", "out of range"),
    ("x | round(999999)", "scale must be between 0 and 18"),
    ("x | pad_left(100000000)", "width must be between 0 and 1000"),
    ("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1), "nested deeper"),
    ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "nested deeper"),
    ("not " * 500 + "x", "levels of operators"),
    (" + ".join(["1"] * 500), "levels of operators"),
    ("x" + " | trim" * 200, "levels of operators"),
    ("a" * 5000, "the limit is"),
    ("f'{x}'", "unexpected"),
    ("x; y", "unexpected character ';'"),
]


def _load(tmp_path: Path, expression: str) -> None:
    path = tmp_path / "evil.yaml"
    quoted = expression.replace("\\", "\\\\").replace('"', '\\"')
    path.write_text(f'output: {{type: a.b}}\nsteps:\n  - map:\n      x: "{quoted}"\n')
    (tmp_path / "empty").mkdir(exist_ok=True)
    load_mapping(path, xref_dir=tmp_path / "empty", schemas_dir=tmp_path / "empty")


@pytest.mark.parametrize(("expression", "message"), ATTEMPTS, ids=[a[0][:40] for a in ATTEMPTS])
def test_injection_is_refused_at_load(tmp_path: Path, expression: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, expression)
    assert message in info.value.message
    assert info.value.context["file"].endswith("evil.yaml")
    assert info.value.context["line"] == 4


def test_parser_never_raises_anything_but_expression_errors() -> None:
    parser = Parser()
    for text in ["", " ", "'", '"', "[", "]", ")", "$", "$$", "1.", ".5", "a..b", "a[", "a[*",
                 "a['x", "\\", "\x00", "if", "if a then", "a |", "| a", "a ~", "not", "-", "--1",
                 "a[1.5]", "a[-]", "😀", "a\nb"]:
        try:
            parser.parse(text)
        except ExpressionError:
            pass
