"""No silent success at the shop sink: a 2xx counts only when its body is the answer the action
expects. An empty 200/204 or a JSON body of another shape is a TransientError naming the
missing key (retried), on real HTTP against a loopback server that answers what we tell it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.rest_shop.sink import ShopSink
from integration_bus.connector import Envelope, TransientError
from integration_bus.runtime import Bus
from tests.rest_shop.support import open_bus, write_config
from tests.support.hostile_http import Answer, HostileHttp
from tests.support.probe import Target

_JSON = {"Content-Type": "application/json"}


def _answer(status: int, body: bytes, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status=status, headers=headers if headers is not None else _JSON,
                  body=lambda: [body])


@pytest.fixture
def server() -> Iterator[HostileHttp]:
    with HostileHttp(_answer(200, b"")) as running:
        yield running


def _sink(root: Path, url: str, action: str, extra: str = "") -> tuple[Bus, ShopSink]:
    sinks = f"""
  shop:
    connector: rest_shop
    action: {action}
    shop: acme
    base_url: "{url}"
    auth: {{kind: token, token: "${{SHOP_TOKEN}}"}}
    rate: 100
    max_attempts: 1{extra}"""
    bus = open_bus(write_config(root, "", sinks=sinks), Target())
    sink = bus.sink("shop")
    assert isinstance(sink, ShopSink)
    return bus, sink


def _envelope(action: str) -> Envelope:
    payload: dict[str, object] = {"sku": "SKU-1", "location": "store-42", "available": 5,
                                  "version": 1} if action == "inventory" else {
        "order_id": 1001, "status": "shipped",
        "lines": [{"sku": "SKU-1", "quantity": 1}]}
    return Envelope.create("test.push", payload, source="test", idempotency_key="k-1")


BAD = {
    "empty_200": (200, b"", _JSON),
    "empty_204": (204, b"", {}),
    "json_list": (200, b"[]", _JSON),
    "other_object": (200, b'{"errors": "queued"}', _JSON),
    "empty_object_under_key": (200, b'{"order": {}}', _JSON),
    "html": (200, b"<html>maintenance</html>", {"Content-Type": "text/html"}),
}
EXPECTED = {"inventory": "inventory_level", "fulfilment": "fulfillment", "order_status": "order"}


@pytest.mark.parametrize("action", list(EXPECTED))
@pytest.mark.parametrize("case", list(BAD))
def test_a_2xx_without_the_expected_answer_is_not_a_delivery(
        case: str, action: str, tmp_path: Path, server: HostileHttp) -> None:
    status, body, headers = BAD[case]
    server.answer = _answer(status, body, headers)
    bus, sink = _sink(tmp_path, server.url, action)
    try:
        with pytest.raises(TransientError) as caught:
            sink.deliver(_envelope(action))
    finally:
        sink.close()
        bus.close()
    # the error names what was missing, the status and the envelope: retried, never counted
    error = caught.value
    assert error.context["missing"] == EXPECTED[action]
    assert error.context["status"] == status and error.context["envelope_id"]
    assert repr(EXPECTED[action]) in str(error) and "not counted as delivered" in str(error)


@pytest.mark.parametrize("action", list(EXPECTED))
def test_the_expected_answer_counts(action: str, tmp_path: Path, server: HostileHttp) -> None:
    key = EXPECTED[action]
    server.answer = _answer(201, b'{"%s": {"id": 7}}' % key.encode())
    bus, sink = _sink(tmp_path, server.url, action)
    try:
        sink.deliver(_envelope(action))  # no error: delivered
    finally:
        sink.close()
        bus.close()
    assert server.requests == 1


def test_answer_null_accepts_a_shop_that_answers_204(tmp_path: Path,
                                                     server: HostileHttp) -> None:
    server.answer = _answer(204, b"", {})
    bus, sink = _sink(tmp_path, server.url, "order_status", "\n    answer: null")
    try:
        sink.deliver(_envelope("order_status"))
    finally:
        sink.close()
        bus.close()
    assert server.requests == 1


def test_a_lookup_answer_of_the_wrong_shape_is_retried_not_read_as_absent(
        tmp_path: Path, server: HostileHttp) -> None:
    server.answer = _answer(200, b'{"orders": []}')
    bus, sink = _sink(tmp_path, server.url, "fulfilment")
    try:
        with pytest.raises(TransientError) as caught:
            sink.lookup(_envelope("fulfilment"))
    finally:
        sink.close()
        bus.close()
    assert caught.value.context["missing"] == "fulfillments"


def test_every_shop_action_says_what_its_answer_must_hold() -> None:
    # a new action without an expected answer would fail every delivery with a KeyError
    from typing import get_args

    from connectors.rest_shop.config import ACTION_ANSWERS, Action

    assert set(get_args(Action)) == set(ACTION_ANSWERS)
