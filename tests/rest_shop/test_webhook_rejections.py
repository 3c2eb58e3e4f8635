"""Webhooks refused or repeated are source-level rejections: counted on /metrics at once and
recorded in the store for ``bus status`` (in a module of its own: a fresh receiver and store)."""

from __future__ import annotations

import pytest

from tests.rest_shop.conftest import Hooks
from tests.support.probe import wait_for

pytestmark = pytest.mark.rabbitmq


def _order(order_id: int) -> dict[str, object]:
    return {"id": order_id, "name": f"#{order_id}", "financial_status": "paid",
            "updated_at": "2024-03-01T10:00:00-05:00", "total_price": "19.99",
            "line_items": [{"id": order_id * 10, "sku": "SKU-1", "quantity": 1,
                            "price": "19.99"}]}


def test_refused_and_duplicate_deliveries_are_source_rejections(
        hooks: Hooks, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("connectors.rest_shop.receiver._RECORD_EVERY", 0.5)
    # Given five forged deliveries, one body over the cap and one order posted twice
    forged = hooks.subscription("acme", secret="not-the-secret")
    for n in range(5):
        assert hooks.sender.send_once(hooks.sender.delivery(forged, _order(2000 + n))) \
            .status == 401
    big = _order(2100)
    big["note"] = "x" * 70_000
    assert hooks.sender.send_once(hooks.sender.delivery(hooks.subscription("acme"), big)) \
        .status == 413
    delivery = hooks.sender.delivery(hooks.subscription("acme"), _order(2200))
    assert [hooks.sender.send_once(delivery).body.get("status") for _ in range(2)] == [
        "accepted", "duplicate"]
    (source,) = hooks.bus.config.sources

    def counted(reason: str) -> float | None:
        return hooks.bus.metrics.registry.get_sample_value(
            "bus_source_rejections_total", {"source": source, "reason": reason})

    # Then every refusal is counted at once on /metrics
    assert counted("webhook_4xx") == 6
    wait_for(lambda: counted("duplicate") == 1, message="the duplicate counted")
    # and recorded for `bus status`, the forged ones in two rows (the first at once, the
    # other four when the interval was over), with the newest kinds of answer
    wait_for(lambda: {(r.reason, r.count) for r in hooks.bus.store.source_rejections()} == {
        ("webhook_4xx", 6), ("duplicate", 1)}, message="rejections in the store")
    rows = {r.reason: r for r in hooks.bus.store.source_rejections()}
    assert sorted(rows["webhook_4xx"].newest) == ["acme too_large", "acme unauthorized"]
    assert hooks.bus.store.count_events("webhook.refused") == 3
