"""Expression semantics: paths, literals, operators, conditionals, pipes, null handling."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from integration_bus.errors import MappingError

D = Decimal
ORDER = {
    "id": 42,
    "customer": {"email": " A@B.C ", "first": "Ann", "last": None, "tags": ["vip", "new"]},
    "lines": [
        {"sku": " a-1 ", "qty": 2, "price": "19.99"},
        {"sku": "7", "qty": "3", "price": 0.1},
    ],
    "note": "",
    "headers": {"X-Shop": "berlin"},
    "empty": [],
}

CASES: list[tuple[str, Any]] = [
    # paths
    ("customer.email", " A@B.C "),
    ("lines[0].sku", " a-1 "),
    ("lines[-1].qty", "3"),
    ("lines[5]", None),
    ("lines[*].qty", [2, "3"]),
    ("missing.deeper.still", None),
    ("headers['X-Shop']", "berlin"),
    ("$.id", 42),
    ("$this.id", 42),
    ("customer.tags[*]", ["vip", "new"]),
    # literals
    ("'EUR'", "EUR"),
    ("'it\\'s'", "it's"),
    ("19.99", D("19.99")),
    ("true", True),
    ("null", None),
    ("[1, 'a', null]", [D(1), "a", None]),
    # arithmetic on mixed input numbers (int, numeric text, float) is exact Decimal
    ("lines[0].qty * lines[0].price", D("39.98")),
    ("lines[1].qty * lines[1].price", D("0.3")),
    ("lines[0].price + lines[1].price", D("20.09")),
    ("-lines[0].qty", D(-2)),
    ("10 / 4", D("2.5")),
    ("10 % 4", D(2)),
    ("1 + 2 * 3", D(7)),
    ("(1 + 2) * 3", D(9)),
    # comparisons and logic
    ("lines[1].qty == 3", True),
    ("lines[1].qty > 2.5", True),
    ("'abc' < 'abd'", True),
    ("id != 42", False),
    ("customer.last == null", True),
    ("note == ''", True),
    ("'vip' in customer.tags", True),
    ("'x' in customer.tags", False),
    ("'erl' in headers['X-Shop']", True),
    ("true and not false", True),
    ("null or ''", False),
    ("empty or 'x'", True),
    # conditional and text joining
    ("if id > 40 then 'big' else 'small'", "big"),
    ("if note then 'has note' else 'no note'", "no note"),
    ("customer.first ~ ' ' ~ customer.last", "Ann "),
    ("id ~ '-' ~ 1.50", "42-1.50"),
    # pipes
    ("customer.email | trim | lower", "a@b.c"),
    ("lines[0].sku | trim | upper | xref('sku')", "SKU-A"),
    ("lines[1].sku | xref('sku.name')", "Seven"),
    ("'nope' | xref('sku', 'UNKNOWN')", "UNKNOWN"),
    ("'abc' | lookup('upper_id')", "ID-ABC"),
    ("'missing' | lookup('upper_id', null)", None),
    ("lines[*].price | sum", D("20.09")),
    ("lines | count", 2),
    ("customer.tags | join(', ')", "vip, new"),
    ("customer.tags | first", "vip"),
    ("empty | first", None),
    ("customer.last | upper", None),
    ("customer.last | default('-')", "-"),
    ("coalesce(customer.last, customer.first, 'x')", "Ann"),
    ("customer.last | is_null", True),
    ("id | string | pad_left(6, '0')", "000042"),
    ("'2024-03-01' | date", date(2024, 3, 1)),
    ("'2024-03-01T10:00:00Z' | datetime", datetime(2024, 3, 1, 10, tzinfo=UTC)),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_expression_value(evaluate: Callable[..., Any], text: str, expected: Any) -> None:
    result = evaluate(text, ORDER)
    assert result == expected
    assert type(result) is type(expected)


ERRORS = [
    ("customer.email + 1", "is not a number"),
    ("customer.last + 1", "null where a number is needed"),
    ("lines.sku", "cannot read field 'sku' of a list"),
    ("id[0]", "cannot take item [0] of a number"),
    ("1 / 0", "by zero"),
    ("'abc' < 1", "is not a number"),
    ("customer < 1", "is object where a number is needed"),
    ("'x' in 5", "'in' needs a list or text"),
    ("'ZZ' | xref('sku')", "no entry for 'ZZ'"),
    ("'missing' | lookup('upper_id')", "found nothing"),
    ("customer | trim", "object where text is needed"),
    ("id | sum", "sum() needs a list"),
    ("'1.5' | integer", "not a whole number"),
    ("'01.03.2024' | date", "not an ISO 8601 date"),
    ("'2024-03-01T10:00:00' | datetime", "has no time zone"),
    ("'12,50' | decimal", "is not a number"),
    ("'1e5000' | decimal", "not a usable number"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[e[0] for e in ERRORS])
def test_expression_error(evaluate: Callable[..., Any], text: str, message: str) -> None:
    with pytest.raises(MappingError) as info:
        evaluate(text, ORDER)
    assert message in str(info.value)


def test_meta_variable(evaluate: Callable[..., Any]) -> None:
    assert evaluate("$meta.type", {}, type="order.created") == "order.created"


def test_null_subject_short_circuits_the_other_arguments(evaluate: Callable[..., Any]) -> None:
    # The second argument would fail, but a null subject returns null before it is evaluated.
    assert evaluate("customer.last | pad_left(1 / 0)", ORDER) is None
