"""Plugin state is per Bus: rest_shop is registered by its factory, so two buses in one process
(even given one registry) pace each shop on their own: a 429 one bus was told to honour does
not hold back the other bus's calls to the same shop."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.rest_shop.fakeshop import ShopState
from connectors.rest_shop.sink import ShopSink
from integration_bus.connector import Envelope, TransientError
from integration_bus.registry import Registry
from integration_bus.runtime import Bus
from tests.rest_shop.support import open_bus, write_config
from tests.support.probe import Target, probe_plugin, registry_with


def _bus(root: Path, base_url: str, target: Target, registry: Registry) -> Bus:
    sinks = f"""
  shop:
    connector: rest_shop
    action: inventory
    shop: acme
    base_url: "{base_url}"
    auth: {{kind: token, token: "${{SHOP_TOKEN}}", header: X-Shopify-Access-Token, scheme: null}}
    max_retry_after: 60s
    max_inline_wait: 1s"""
    return open_bus(write_config(root, "", sinks=sinks), target, registry)


def _level(version: int) -> Envelope:
    return Envelope.create("inventory.level_set", {"sku": "SKU-1", "location": "store-42",
                                                   "available": version, "version": version},
                           source="erp", idempotency_key=f"erp:SKU-1:{version}")


def test_a_429_one_bus_honours_does_not_hold_back_another_bus_of_the_process(
        tmp_path: Path, shop: tuple[ShopState, str]) -> None:
    state, url = shop
    # Given two buses in one process, built with one registry of the installed entry points,
    # each with a rest_shop sink to the same fake shop over HTTP
    target = Target()
    registry = registry_with(probe_plugin(target))
    with _bus(tmp_path / "a", url, target, registry) as bus_a, \
            _bus(tmp_path / "b", url, target, registry) as bus_b:
        sink_a, sink_b = bus_a.sink("shop"), bus_b.sink("shop")
        assert isinstance(sink_a, ShopSink) and isinstance(sink_b, ShopSink)
        try:
            # When the shop answers bus A's call 429 with a Retry-After of a day
            state.throttle(1, "86400")
            with pytest.raises(TransientError):
                sink_a.deliver(_level(1))
            # Then bus A's pacer holds its next call back without calling the shop
            with pytest.raises(TransientError, match="rate-limited"):
                sink_a.deliver(_level(2))
            assert len(state.count_attempts("inventory_levels")) == 1
            # and bus B's pacer for the same shop is open: its call goes through
            sink_b.deliver(_level(3))
            assert len(state.count_attempts("inventory_levels")) == 2
            assert state.inventory[("SKU-1", "store-42")] == (3, 3)
        finally:
            sink_a.close()
            sink_b.close()
