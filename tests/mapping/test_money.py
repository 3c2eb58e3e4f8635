"""Money is Decimal from input to output: exact to the cent, never a float."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from integration_bus.envelope import Envelope, dumps
from integration_bus.mapping import CompiledMapping


def test_point_one_plus_point_two_is_exactly_point_three(evaluate: Callable[..., Any]) -> None:
    assert evaluate("0.1 + 0.2") == Decimal("0.3")
    # Input numbers arriving as JSON floats, ints or text behave the same.
    assert evaluate("a + b", {"a": 0.1, "b": 0.2}) == Decimal("0.3")
    assert evaluate("a + b", {"a": "0.1", "b": "0.2"}) == Decimal("0.3")
    assert evaluate("a + b == 0.3", {"a": 0.1, "b": 0.2}) is True


def test_price_times_quantity_is_exact_to_the_cent(evaluate: Callable[..., Any]) -> None:
    assert evaluate("19.99 * 3") == Decimal("59.97")
    assert evaluate("price * qty", {"price": 19.99, "qty": 3}) == Decimal("59.97")
    assert evaluate("price * qty | round(2)", {"price": "19.99", "qty": "3"}) == Decimal("59.97")
    assert evaluate("price * qty", {"price": 1.15, "qty": 3}) == Decimal("3.45")
    # In binary floats both of these are off by a tail; Decimal has none.
    assert 1.15 * 3 != 3.45 and 0.1 + 0.2 != 0.3


def test_summing_many_cents_never_drifts(evaluate: Callable[..., Any]) -> None:
    prices = {"lines": [{"p": 0.01} for _ in range(1000)]}
    assert evaluate("lines[*].p | sum", prices) == Decimal("10.00")


def test_rounding_modes(evaluate: Callable[..., Any]) -> None:
    assert evaluate("2.345 | round(2)") == Decimal("2.35")  # half_up is the default
    assert evaluate("2.345 | round(2, 'half_even')") == Decimal("2.34")
    assert evaluate("-2.345 | round(2, 'half_up')") == Decimal("-2.35")
    assert evaluate("2.341 | round(2, 'ceiling')") == Decimal("2.35")
    assert evaluate("2.349 | round(2, 'down')") == Decimal("2.34")
    assert evaluate("x | round(2, mode)", {"x": "1.005", "mode": "half_up"}) == Decimal("1.01")
    assert str(evaluate("5 | round(2)")) == "5.00"


def test_money_leaves_the_mapping_as_exact_decimal_text(
        make_mapping: Callable[..., CompiledMapping]) -> None:
    mapping = make_mapping("""\
        output: {type: order.created}
        steps:
          - map:
              lines:
                $each: lines
                $map: {total: "price * qty | round(2)"}
          - set:
              total: "sum(lines[*].total)"
              tax: "total * 0.19 | round(2)"
        """)
    envelope = Envelope.create("order.placed", {"lines": [{"price": 19.99, "qty": 3},
                                                          {"price": 0.1, "qty": 2}]}, source="t")
    (out,) = mapping(envelope)
    assert out.payload == {"lines": [{"total": "59.97"}, {"total": "0.20"}], "total": "60.17",
                           "tax": "11.43"}
    assert json.loads(dumps(out.payload))["total"] == "60.17"
    _no_floats(out.payload)


def test_output_schema_number_keeps_an_exact_decimal(
        make_mapping: Callable[..., CompiledMapping]) -> None:
    schema = {"type": "object", "properties": {"amount": {"type": "number"},
                                               "qty": {"type": "integer"},
                                               "text": {"type": "string"}}}
    mapping = make_mapping(
        "output: {type: a.b, schema: money@1}\nsteps:\n  - map:\n      amount: 'x * 3'\n"
        "      qty: 'x * 0 + 2'\n      text: 'x * 3'\n",
        schemas={"money.v1.json": json.dumps(schema)})
    ((_, doc),) = mapping.run({"x": 19.99})
    assert doc == {"amount": Decimal("59.97"), "qty": 2, "text": "59.97"}
    assert type(doc["amount"]) is Decimal and type(doc["qty"]) is int
    _no_floats(doc)


def _no_floats(value: Any) -> None:
    assert not isinstance(value, float)
    if isinstance(value, dict):
        for item in value.values():
            _no_floats(item)
    elif isinstance(value, list):
        for item in value:
            _no_floats(item)
