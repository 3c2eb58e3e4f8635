"""Property tests: the compiled engine agrees with the reference interpreter, and no input makes
the compiler or the runtime raise anything but a typed MappingError / ConfigError."""

from __future__ import annotations

import decimal
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integration_bus.errors import ConfigError, MappingError
from integration_bus.mapping import CompiledMapping
from integration_bus.mapping.builtin_functions import default_registry
from integration_bus.mapping.context import Ctx
from integration_bus.mapping.expr_compiler import ExprCompiler, Scope
from integration_bus.mapping.functions import BindContext
from integration_bus.mapping.loader import Loader, mapping_files
from integration_bus.mapping.reference import ReferenceInterpreter
from integration_bus.mapping.values import DECIMAL_CONTEXT
from integration_bus.yamlsafe import read_yaml

from .conftest import MAPPINGS, SCHEMAS

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
# The compiled engine passes its decimal context explicitly: a caller's context must not matter.
HOSTILE = decimal.Context(prec=5, rounding=decimal.ROUND_DOWN, traps=[])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6),
    st.decimals(min_value=-10**6, max_value=10**6, places=3, allow_nan=False),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "0", "1.5", "19.99", "abc", " x ", "paid", "2024-03-01",
                     "2024-03-01T10:00:00Z", "MUG-WHITE", "0042", "Y", "N", "true", "1e3"]),
    st.text(max_size=6),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from([
        "id", "sku", "qty", "price", "lines", "status", "a", "b"]), inner, max_size=4)),
    max_leaves=12)


def _payload_for(mapping: CompiledMapping) -> st.SearchStrategy[Any]:
    keys = sorted(_field_names(read_yaml(Path(mapping.info.file))[0]))
    return st.dictionaries(st.sampled_from(keys), json_values, max_size=len(keys))


def _field_names(data: Any) -> set[str]:
    """Identifier-like words in a mapping file: likely input field names."""
    import re

    words: set[str] = set()
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
            words.update(k for k in node if re.fullmatch(r"[a-z_]+", k))
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            words.update(re.findall(r"(?<![$'\w])([a-z_][a-z_0-9]*)", node))
    return words


def _outcome(run: Any) -> tuple[str, Any]:
    try:
        return "ok", run()
    except MappingError as exc:
        return "error", exc.message


LOADER = Loader(xref_dir=MAPPINGS / "xref", schemas_dir=SCHEMAS)
EXAMPLES = [LOADER.load(path) for path in mapping_files(MAPPINGS)]
REFERENCES = [ReferenceInterpreter(read_yaml(Path(m.info.file))[0], registry=LOADER.registry,
                                   bind=BindContext(LOADER.tables, {}), schemas=LOADER.schemas)
              for m in EXAMPLES]


@SETTINGS
@given(st.data())
def test_compiled_examples_agree_with_the_reference(data: st.DataObject) -> None:
    for mapping, reference in zip(EXAMPLES, REFERENCES, strict=True):
        payload = data.draw(st.one_of(_payload_for(mapping), json_values), label=mapping.name)
        with decimal.localcontext(HOSTILE):
            compiled = _outcome(partial(mapping.run, payload))
        expected = _outcome(partial(reference.run, payload))
        assert compiled == expected, mapping.name


# --- random expressions over random documents ---

names = st.sampled_from(["id", "sku", "qty", "price", "lines", "status", "a", "b"])
paths = st.builds(lambda base, rest: base + "".join(rest), names, st.lists(st.one_of(
    names.map(lambda n: "." + n), st.sampled_from(["[0]", "[-1]", "[*]", "[3]"])), max_size=3))
literals = st.sampled_from(["1", "0", "2.5", "19.99", "'x'", "'19.99'", "''", "true", "false",
                            "null", "[1, 'a']", "$", "$this", "$index"])
UNARY_FUNCTIONS = ["upper", "trim", "string", "length", "decimal", "integer", "abs", "floor",
                   "bool", "is_null", "sum", "count", "first", "last", "date", "datetime"]
BINARY_FUNCTIONS = ["default(0)", "round(2)", "round(1, 'half_even')", "join(',')",
                    "pad_left(3, '0')", "substring(1, 2)", "contains('a')", "xref('sku', null)",
                    "xref('sku')", "replace('a', 'b')", "split(',')", "add_days(1)",
                    "business_day('Europe/Berlin', '04:00')", "to_tz('UTC')",
                    "format_date('%Y')", "min(1)", "coalesce(1)", "concat('-')"]


def _expressions() -> st.SearchStrategy[str]:
    numeric = st.sampled_from(["1", "2.5", "19.99", "3", "0.1", "7", "0.25"])
    leaves = st.one_of(paths, literals, numeric, numeric)

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.builds(lambda a, op, b: f"({a} {op} {b})", inner,
                      st.sampled_from(["+", "-", "*", "/", "%", "+", "-", "*", "~", "==", "!=",
                                       "<", ">=", "and", "or", "in"]), inner),
            st.builds(lambda a, f: f"({a} | {f})", inner,
                      st.sampled_from(UNARY_FUNCTIONS + BINARY_FUNCTIONS)),
            st.builds(lambda a: f"(not {a})", inner),
            st.builds(lambda a: f"-({a})", inner),
            st.builds(lambda c, a, b: f"(if {c} then {a} else {b})", inner, inner, inner),
            st.builds(lambda a, b: f"coalesce({a}, {b})", inner, inner),
        )

    return st.recursive(leaves, extend, max_leaves=8)


COMPILER = ExprCompiler(default_registry(), BindContext(LOADER.tables, {}))
REFERENCE = REFERENCES[0]


numbers = st.one_of(st.integers(-1000, 1000), st.decimals(-1000, 1000, places=2),
                    st.sampled_from(["19.99", "0.1", "3"]))
documents = st.one_of(json_values, st.fixed_dictionaries(
    {name: st.one_of(numbers, scalars, st.lists(st.one_of(numbers, json_values), max_size=3))
     for name in ["id", "sku", "qty", "price", "lines", "status", "a", "b"]}))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_expressions(), documents, st.one_of(st.none(), st.integers(0, 3)))
def test_random_expressions_agree_with_the_reference(text: str, doc: Any,
                                                     index: int | None) -> None:
    try:
        compiled = COMPILER.compile(text, Scope(in_loop=True))
    except ConfigError:
        return  # refused at load, e.g. a bind check on a literal: that is a typed error too
    node = compiled.node

    def run_compiled() -> Any:
        ctx = Ctx(doc)
        ctx.index = index
        with decimal.localcontext(HOSTILE):
            return compiled.fn(doc, ctx)

    def run_reference() -> Any:
        env = {"doc": doc, "input": doc, "index": index, "meta": {}}
        with decimal.localcontext(DECIMAL_CONTEXT):
            return REFERENCE.eval(node, doc, env)

    outcome = _outcome(run_compiled)
    assert outcome == _outcome(run_reference), text
    if outcome[0] == "ok" and compiled.types is not None:  # the inferred result types hold
        assert type(outcome[1]) in compiled.types, text


def _arithmetic() -> st.SearchStrategy[str]:
    leaves = st.sampled_from(["1", "2.5", "19.99", "0.1", "3", "id", "qty", "price", "a.b",
                              "lines[0]", "lines[-1]", "$index"])
    return st.recursive(leaves, lambda inner: st.one_of(
        st.builds(lambda a, op, b: f"({a} {op} {b})", inner,
                  st.sampled_from(["+", "-", "*", "/", "%", "<", "==", "~"]), inner),
        st.builds(lambda a, f: f"({a} | {f})", inner,
                  st.sampled_from(["round(2)", "abs", "integer", "decimal", "string"]))),
        max_leaves=6)


nested = st.fixed_dictionaries({
    "id": numbers, "qty": numbers, "price": numbers, "a": st.fixed_dictionaries({"b": numbers}),
    "lines": st.lists(numbers, max_size=3)})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_arithmetic(), nested, st.one_of(st.none(), st.integers(0, 3)))
def test_random_arithmetic_agrees_with_the_reference(text: str, doc: Any,
                                                     index: int | None) -> None:
    test_random_expressions_agree_with_the_reference.hypothesis.inner_test(  # type: ignore[attr-defined]
        text, doc, index)


@SETTINGS
@given(st.text(max_size=60))
def test_arbitrary_text_is_refused_only_with_config_errors(text: str) -> None:
    try:
        COMPILER.compile(text, Scope())
    except ConfigError:
        pass


def test_decimal_values_round_trip_exactly() -> None:
    assert _outcome(lambda: Decimal("0.1") + Decimal("0.2")) == ("ok", Decimal("0.3"))
