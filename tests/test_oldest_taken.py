"""The creation time of the oldest envelope a lane takes, per route (what
``bus_oldest_unsettled_seconds`` reports), read from ULID envelope ids without decoding them."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from integration_bus.envelope import new_id
from integration_bus.lane import _oldest_per_route
from integration_bus.metrics import ulid_seconds
from integration_bus.transport import Delivery


def ulid_at(seconds: float) -> str:
    """A ULID made at ``seconds`` (Unix time): its time part encoded, the rest random."""
    digits = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    value, out = int(seconds * 1000), ""
    for _ in range(10):
        value, digit = divmod(value, 32)
        out = digits[digit] + out
    return out + new_id()[10:]


def delivery(queue: str, message_id: str) -> Delivery:
    return Delivery(body=b"{}", queue=queue, redelivered=False, delivery_count=0, headers={},
                    tag=1, raw=None, message_id=message_id)


ROUTES: Any = {"q.a": SimpleNamespace(name="a"), "q.b": SimpleNamespace(name="b")}


def test_the_oldest_ulid_of_each_route_whatever_the_order_and_case() -> None:
    now = time.time()
    old, older, oldest = ulid_at(now - 60), ulid_at(now - 600), ulid_at(now - 3600)
    assert abs(ulid_seconds(oldest) - (now - 3600)) < 0.01  # type: ignore[operator]
    found = _oldest_per_route([delivery("q.a", old), delivery("q.a", oldest.lower()),
                               delivery("q.b", older), delivery("q.a", older)], ROUTES)
    assert set(found) == {"a", "b"}
    assert abs(found["a"].timestamp() - (now - 3600)) < 0.01
    assert abs(found["b"].timestamp() - (now - 600)) < 0.01


def test_an_id_that_is_no_ulid_counts_as_now_and_does_not_hide_older_ones() -> None:
    now = time.time()
    older = ulid_at(now - 600)
    # "0-partner-id" sorts before every ULID, yet the ULID is older than now
    found = _oldest_per_route([delivery("q.a", "0-partner-id"), delivery("q.a", older)],
                              ROUTES)
    assert abs(found["a"].timestamp() - (now - 600)) < 0.01
    alone = _oldest_per_route([delivery("q.b", "0-partner-id")], ROUTES)
    assert alone["b"] <= datetime.now(UTC) and alone["b"].timestamp() >= now - 1
