"""Ingress isolation (fault suite): one webhook that cannot be published settles on its own —
a definitive answer at once, a dead letter with the reason — and the others sent with it, in
the same publish batch, are taken. Over real HTTP and RabbitMQ."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from connectors.rest_shop.bridge import RequestBatches, Submission
from integration_bus.connector import Envelope, run_batch_source
from tests.rest_shop.conftest import Hooks

pytestmark = [pytest.mark.rabbitmq, pytest.mark.faults]


def _nested(levels: int) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    inner = payload
    for _ in range(levels):
        inner["a"] = {}
        inner = inner["a"]
    return payload


def test_an_unpublishable_webhook_among_40_is_answered_for_good_and_alone(hooks: Hooks) -> None:
    # Given 40 ordinary orders and one signed body nested 300 levels deep, sent together
    sub = hooks.subscription("acme")
    sender = hooks.sender
    good = [sender.delivery(sub, {"id": 8_500_000 + n, "updated_at": "2024-03-01T10:00:00Z"})
            for n in range(40)]
    bad = sender.delivery(sub, {"id": 8_500_999, "updated_at": "2024-03-01T10:00:00Z",
                                "deep": _nested(300)})
    with ThreadPoolExecutor(41) as pool:
        futures = [pool.submit(sender.send_once, d) for d in [*good[:20], bad, *good[20:]]]
        attempts = [f.result() for f in futures]
    # Then the 40 are taken, and the bad one gets a definitive answer (4xx) the first time
    first_bad = attempts.pop(20)
    assert [a.status for a in attempts] == [200] * 40
    assert {a.body["status"] for a in attempts} == {"accepted"}
    assert first_bad.status == 400 and "deeper than" in first_bad.body["error"]
    # and every time it is sent again; one dead letter holds it, with the reason
    assert [sender.send_once(bad).status for _ in range(2)] == [400, 400]
    (letter,) = [d for d in hooks.bus.store.dead_letters()
                 if (d["source_ref"] or {}).get("delivery_id") == bad.delivery_id]
    assert letter["error_type"] == "PayloadError" and "deeper than 64" in letter["message"]


def _submission(hooks: Hooks, payload: dict[str, Any]) -> Submission:
    envelope = Envelope.create("shop.shopify.order_created", payload, source="hooks")
    ref = {"shop": "acme", "delivery_id": envelope.id, "topic": "orders/create"}
    return Submission(envelope=envelope, raw=b"{}", source_ref=ref,
                      keys=(f"b:acme:test:{uuid.uuid4().hex}",))


def test_an_envelope_that_cannot_be_encoded_fails_alone_in_its_batch(hooks: Hooks) -> None:
    # Given one batch of 40 envelopes and one the bus cannot encode (past its JSON depth)
    batches = RequestBatches(hooks.bus.context("hooks"), window=256)
    batch = [_submission(hooks, {"id": 8_600_000 + n}) for n in range(40)]
    poison = _submission(hooks, {"id": 8_600_999, "deep": _nested(300)})
    batch.insert(17, poison)
    # queued before the runtime's loop starts: it reads them as one batch
    futures = {id(s): batches.submit(s) for s in batch}
    stop = threading.Event()
    publisher = hooks.bus.publisher()
    loop = threading.Thread(target=run_batch_source, args=(batches, publisher, stop),
                            daemon=True)
    loop.start()
    try:
        results = {key: future.result(timeout=30) for key, future in futures.items()}
        # Then the 40 are published, and the poison is dead-lettered with the reason
        assert [results[id(s)].status for s in batch if s is not poison] == ["accepted"] * 40
        assert results[id(poison)].status == "dead_lettered"
        # and sent again it is a duplicate of that settlement, never a retryable error
        again = Submission(envelope=poison.envelope, raw=b"{}", source_ref=poison.source_ref,
                           keys=poison.keys)
        assert batches.submit(again).result(timeout=30).status == "duplicate"
    finally:
        stop.set()
        loop.join(30)
        batches.close()
        publisher.close()
    assert not loop.is_alive()
    (letter,) = [d for d in hooks.bus.store.dead_letters()
                 if (d["source_ref"] or {}).get("delivery_id") == poison.envelope.id]
    # the transport refuses it alone, before the broker sees it (the core's error type)
    assert letter["error_type"] == "UnpublishableError"
    assert "cannot be encoded: Recursion limit reached" in letter["message"]
