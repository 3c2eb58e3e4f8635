"""Decoding an envelope: the quick path ``Envelope.from_dict`` takes for what the bus writes
accepts and refuses exactly what the field-by-field check (``Envelope._checked``) does, and
says so in the same words."""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import Any

import orjson
import pytest

from integration_bus.envelope import MAX_LENGTHS, Envelope, check_type
from integration_bus.errors import EnvelopeError


class Text(str):
    """A str subclass: not the exact type the quick path looks for, still text."""


def _written() -> dict[str, Any]:
    """An envelope as a worker reads it off a queue: derived, so every field is set."""
    first = Envelope.create("order.created", {"n": 1, "total": "9.99"}, source="shop",
                            headers={"source_ref": {"file": "a.csv"}}, schema="order@1")
    return orjson.loads(first.derive("order.accepted", source="route").to_json())  # type: ignore[no-any-return]


_ODD_VALUES: list[Any] = [None, "", " ", 0, -1, 1, True, False, 2.5, [], {}, ["x"], {"a": 1},
                          Text("t"), "order.created", "not a type!", "2026-13-01T00:00:00",
                          "2026-12-06T10:00:00+00:00", "2026-12-06", "yesterday"]


def _variants() -> list[tuple[str, dict[str, Any]]]:
    base = _written()
    out: list[tuple[str, dict[str, Any]]] = [("as written", base)]
    for name in base:
        out.append((f"{name} missing", {k: v for k, v in base.items() if k != name}))
        for i, value in enumerate(_ODD_VALUES):
            out.append((f"{name}={i}:{value!r}"[:60], {**base, name: value}))
        limit = MAX_LENGTHS.get(name)
        if limit is not None:
            out.append((f"{name} at its limit", {**base, name: "a" * limit}))
            out.append((f"{name} over its limit", {**base, name: "a" * (limit + 1)}))
    out.append(("an unknown field", {**base, "extra": 1}))
    out.append(("an ordered dict", OrderedDict(base)))  # type: ignore[arg-type]
    out.append(("a new type", {**base, "type": "never.seen.before_by_this_process"}))
    long_type = "t" * (MAX_LENGTHS["type"] + 1)
    check_type(long_type)  # a good type, remembered, but too long for an envelope
    out.append(("a remembered type over the limit", {**base, "type": long_type}))
    return out


def _outcome(decode: Any, data: Any) -> Any:
    try:
        return decode(data)
    except EnvelopeError as exc:
        return ("error", str(exc), exc.context.get("field"))


@pytest.mark.parametrize(("case", "data"), _variants(), ids=[c for c, _ in _variants()])
def test_the_quick_path_decides_as_the_checked_one(case: str, data: dict[str, Any]) -> None:
    assert _outcome(Envelope.from_dict, data) == _outcome(Envelope._checked, data)


def test_an_envelope_comes_back_as_it_went() -> None:
    data = _written()
    envelope = Envelope.from_dict(data)
    assert envelope.to_dict() == data
    assert Envelope.from_json(envelope.to_json()) == envelope
    assert isinstance(envelope.created_at, datetime) and envelope.created_at.tzinfo is not None
    with pytest.raises(AttributeError):
        envelope.id = "changed"  # type: ignore[misc]  # still frozen


def test_a_derived_envelope_is_the_dataclass_a_constructor_would_build() -> None:
    parent = Envelope.from_dict(_written())
    child = parent.derive("sale.recorded", {"x": 1}, source="pos")
    rebuilt = Envelope(id=child.id, type="sale.recorded", source="pos",
                       correlation_id=parent.correlation_id,
                       idempotency_key=f"{parent.idempotency_key}>sale.recorded",
                       payload={"x": 1}, created_at=child.created_at, causation_id=parent.id,
                       schema=None, headers=dict(parent.headers), attempt=0, replay_of=None)
    assert child == rebuilt and hash(child.id) == hash(rebuilt.id)
    assert child.headers is not parent.headers  # a copy, as before
    with pytest.raises(EnvelopeError, match="invalid message type"):
        parent.derive("Bad Type")


@pytest.mark.parametrize(("field", "value", "words"), [
    ("id", "", "missing or empty 'id'"),
    ("attempt", -1, "attempt must be a non-negative integer"),
    ("created_at", "yesterday", "invalid envelope: Invalid isoformat string"),
    ("headers", [1], "headers must be an object"),
    ("source", "s" * 129, "source must be text of at most 128 characters"),
])
def test_a_bad_field_is_named(field: str, value: Any, words: str) -> None:
    with pytest.raises(EnvelopeError, match=words):
        Envelope.from_json(orjson.dumps({**_written(), field: value}))


def test_a_created_envelope_is_the_dataclass_a_constructor_would_build() -> None:
    created = Envelope.create("order.created", {"n": 1}, source="shop", idempotency_key="K-1",
                              schema="order@1", headers={"a": 1})
    assert created == Envelope(id=created.id, type="order.created", source="shop",
                               correlation_id=created.id, idempotency_key="K-1",
                               payload={"n": 1}, created_at=created.created_at,
                               schema="order@1", headers={"a": 1})
    plain = Envelope.create("order.created", {}, source="shop")
    assert plain.idempotency_key == plain.correlation_id == plain.id
    assert (plain.causation_id, plain.schema, plain.headers, plain.attempt, plain.replay_of) == (
        None, None, {}, 0, None)
