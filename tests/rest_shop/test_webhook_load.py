"""1,000 signed deliveries at concurrency 8 through the real receiver, broker and worker.

The mix: 10% re-sent with the same delivery id (half of them at the same instant as the first
copy), 5% with a bad HMAC, 1% cut short in transit (then retried, as a sender does when it got
no answer), 5% of the events also sent by a second subscription (same event id, another
delivery id, the same body), and shops mid-rotation (some signed with the old secret).
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from connectors.rest_shop.fakeshop import Attempt, Delivery, Order
from connectors.rest_shop.payload import body_identity
from integration_bus.store.schema import journal
from tests.rest_shop.conftest import Hooks
from tests.rest_shop.support import SECRETS, p99
from tests.support.probe import wait_for

pytestmark = pytest.mark.rabbitmq

TOTAL, CONCURRENCY = 1000, 8


@dataclass
class Send:
    """One planned POST (or a sequence that belongs together)."""

    kind: str  # original, resend, resend_concurrent, second_subscription, bad_hmac, truncated
    delivery: Delivery
    barrier: threading.Barrier | None = None


@dataclass
class Plan:
    sends: list[Send]
    events: dict[str, str]  # delivery id -> business event key (shop:topic:event)


def _plan(hooks: Hooks) -> Plan:
    rng = random.Random(7)
    acme_new, woo = hooks.subscription("acme"), hooks.subscription("woo")
    acme_old = hooks.subscription("acme", secret=SECRETS["ACME_OLD"])
    acme_second, woo_second = (hooks.subscription("acme", sub_id=2),
                               hooks.subscription("woo", sub_id=2))
    sender = hooks.sender
    originals: list[Send] = []
    events: dict[str, str] = {}
    second: list[Send] = []
    base = datetime(2024, 3, 1, tzinfo=UTC)
    unique = TOTAL - 100 - 50 - 50 - 10  # each truncated delivery is retried as its original
    for n in range(unique):
        order = Order(id=5_000_000_000_000 + n, number=n, created=base,
                      updated=base + timedelta(seconds=n), lines=[("SKU-1", 1, Decimal("9.99"))])
        if n % 10 < 7:  # Shopify (the event id header is sent, but the body says what it is)
            sub = acme_old if n % 5 == 0 else acme_new
            delivery = sender.delivery(sub, order.shopify(), event_id=f"evt-{n}")
            twin = acme_second
        else:  # WooCommerce: the order id at its modification time
            delivery = sender.delivery(woo, order.woocommerce())
            twin = woo_second
        key = _event_key("acme" if n % 10 < 7 else "woo", delivery)
        events[delivery.delivery_id] = key
        originals.append(Send("original", delivery))
        if len(second) < 50 and n % 7 == 3:
            copy = sender.delivery(twin, order.render(twin.platform), event_id=delivery.event_id)
            events[copy.delivery_id] = key
            second.append(Send("second_subscription", copy))
    picks = rng.sample(originals, 100 + 50 + 10)
    resent, forged, cut = picks[:100], picks[100:150], picks[150:]
    sends: list[Send] = []
    concurrent = {id(s) for s in resent[:50]}
    for send in originals:
        if id(send) in concurrent:  # the original and its resend leave together
            barrier = threading.Barrier(2, timeout=20)
            send.barrier = barrier
            sends += [send, Send("resend_concurrent", send.delivery, barrier)]
        elif send in cut:
            sends.append(Send("truncated", send.delivery))
        else:
            sends.append(send)
    for i, send in enumerate(forged):
        # half reuse a real delivery id: a forged copy must not block the real one
        delivery = send.delivery if i % 2 else sender.delivery(
            send.delivery.subscription, {"id": 1, "forged": True})
        sends.insert(rng.randrange(len(sends)), Send("bad_hmac", delivery))
    sends += [Send("resend", s.delivery) for s in resent[50:]]
    sends += second
    rng.shuffle(sends[-100:])
    assert sum(2 if s.kind == "truncated" else 1 for s in sends) == TOTAL
    return Plan(sends, events)


def _event_key(shop: str, delivery: Delivery) -> str:
    """The receiver's idempotency key: what the signed body says it is, and its digest."""
    identity = body_identity(json.loads(delivery.body))
    digest = hashlib.sha256(delivery.body).hexdigest()[:16]
    return f"{shop}:{delivery.subscription.topic}:{identity}#{digest}"


def _run(hooks: Hooks, send: Send) -> list[tuple[str, Attempt]]:
    sender = hooks.sender
    if send.kind == "truncated":  # no answer, then the sender retries the same delivery
        return [("truncated", sender.send_truncated(send.delivery)),
                ("original", sender.send_once(send.delivery))]
    if send.barrier is not None:
        send.barrier.wait()
    return [(send.kind, sender.send_once(send.delivery,
                                         tamper="bad_hmac" if send.kind == "bad_hmac" else None))]


def _receiver_duplicates(hooks: Hooks) -> int:
    with hooks.bus.store.db.begin() as conn:
        rows = conn.execute(journal.select().where(journal.c.event == "duplicate",
                                                   journal.c.route.is_(None))).all()
    return len(rows)


@pytest.mark.serial  # its p99 answer time
def test_a_thousand_signed_deliveries_take_every_event_once(hooks: Hooks) -> None:
    plan = _plan(hooks)
    unique_events = len(set(plan.events.values()))
    # When 1,000 deliveries arrive from 8 concurrent senders
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        futures = [pool.submit(_run, hooks, send) for send in plan.sends]
        results = [r for future in futures for r in future.result()]
    assert len(results) == TOTAL
    statuses = Counter((kind, a.status) for kind, a in results)
    # Then every forged delivery, and only those, was refused 401
    assert sum(n for (kind, status), n in statuses.items() if status == 401) == 50
    assert statuses[("bad_hmac", 401)] == 50
    # a body cut short in transit was never answered 2xx (and nothing of it was published)
    assert not [a for kind, a in results if kind == "truncated" and a.status == 200]
    # every genuine delivery was answered 200: one "accepted" per event, the rest duplicates
    genuine = [(kind, a) for kind, a in results if kind not in ("bad_hmac", "truncated")]
    assert {a.status for _, a in genuine} == {200}
    outcome = Counter(a.body["status"] for _, a in genuine)
    assert outcome == {"accepted": unique_events, "duplicate": len(genuine) - unique_events}
    accepted_per_event = Counter(plan.events[a.delivery_id] for _, a in genuine
                                 if a.body["status"] == "accepted")
    assert set(accepted_per_event.values()) == {1}  # whichever copy came first, only one
    assert {a.body["status"] for kind, a in genuine if kind == "resend"} == {"duplicate"}
    # no 2xx left the receiver before the broker had confirmed that event's envelope
    confirmed = hooks.confirms.confirmed
    for _, attempt in genuine:
        key = plan.events[attempt.delivery_id]
        assert key in confirmed and confirmed[key] < attempt.answered, attempt.delivery_id
    # effects = unique events, none twice; duplicates were recorded as `duplicate`
    wait_for(lambda: hooks.target.count() == unique_events, timeout=60,
             message=f"{unique_events} unique events delivered")
    wait_for(lambda: getattr(hooks.bus.transport.queue_stats("bus.route.orders"),
                             "messages", None) == 0, message="the route queue drained")
    assert hooks.target.duplicates() == {}
    assert set(hooks.target.effects) == set(plan.events.values())
    assert len(hooks.confirms.published) == unique_events  # each event went out once
    assert _receiver_duplicates(hooks) == outcome["duplicate"]
    answered = [a.answered - a.started for _, a in results if a.status is not None]
    codes = dict(Counter(a.status for _, a in results))
    print(f"\nwebhooks: {TOTAL} deliveries at concurrency {CONCURRENCY}: "
          f"p50={sorted(answered)[len(answered) // 2] * 1000:.1f} ms "
          f"p99={p99(answered) * 1000:.1f} ms; statuses={codes}")
    assert p99(answered) < 1.0  # answered well inside the senders' timeouts
