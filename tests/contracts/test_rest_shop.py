"""The ``rest_shop`` sink (fulfilments, against the fake shop on real HTTP), its order poll and
its webhook receiver pass the kit's contract suites."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from connectors.rest_shop import make_plugin
from connectors.rest_shop.fakeshop import AppServer, ShopState, Subscription, WebhookSender
from connectors.rest_shop.fakeshop.api import build_shop_app
from integration_bus.connector import (
    ConnectorContext,
    ConnectorPlugin,
    Envelope,
    PollingSource,
    Sink,
    Source,
)
from integration_bus.testing import ContractBus, SinkContract, SourceContract
from integration_bus.testing.sink_contract import EffectCount, EnvelopeFactory, SinkFactory
from integration_bus.testing.source_contract import AckCount, Feed, SourceFactory
from tests.support.hostile_http import Answer, HostileHttp
from tests.support.services import free_port

TOKEN = "shpat-contract-token"
WEBHOOK_SECRET = "contract-webhook-secret-5e1f"


@pytest.fixture
def shop() -> Iterator[tuple[ShopState, str]]:
    """The fake shop on a free loopback port: (its state, its base URL)."""
    state = ShopState(token=TOKEN)
    with AppServer(build_shop_app(state)) as server:
        yield state, server.url


@pytest.fixture
def plugin() -> ConnectorPlugin:
    return make_plugin()


def sink_config(plugin: ConnectorPlugin, base_url: str) -> BaseModel:
    assert plugin.sink_config is not None
    return plugin.sink_config.model_validate({
        "action": "fulfilment", "shop": "acme", "base_url": base_url,
        "auth": {"kind": "token", "token": TOKEN, "header": "X-Shopify-Access-Token",
                 "scheme": None},
        "rate": 200, "burst": 50, "max_attempts": 2, "backoff": "20ms",
        "timeouts": {"connect": "1s", "read": "2s"}})


class TestRestShopSink(SinkContract):
    @pytest.fixture
    def make_sink(self, plugin: ConnectorPlugin, shop: tuple[ShopState, str],
                  contract_bus: ContractBus) -> SinkFactory:
        config = sink_config(plugin, shop[1])

        def make() -> Sink:
            assert plugin.create_sink is not None
            return plugin.create_sink(config, contract_bus.context("shop"))
        return make

    @pytest.fixture
    def make_envelope(self, shop: tuple[ShopState, str]) -> EnvelopeFactory:
        state = shop[0]

        def shipment(key: str) -> Envelope:
            (order,) = state.add_orders(1)
            return Envelope.create("shipment.created", {
                "order_id": order.id, "lines": [{"sku": "SKU-1", "quantity": 1}],
                "tracking_number": "1Z999", "carrier": "UPS"}, source="wms",
                idempotency_key=key)
        return shipment

    @pytest.fixture
    def effects(self, shop: tuple[ShopState, str]) -> EffectCount:
        return lambda key: shop[0].effects.get(f"fulfilment:{key}", 0)

    @pytest.fixture
    def refused_envelope(self) -> Envelope:
        # no order 12345 at the shop: 404, a refusal
        return Envelope.create("shipment.created", {
            "order_id": 12345, "lines": [{"sku": "SKU-1", "quantity": 1}],
            "tracking_number": "1Z999", "carrier": "UPS"}, source="wms",
            idempotency_key="contract-refused")

    @pytest.fixture
    def make_unreachable_sink(self, plugin: ConnectorPlugin,
                              contract_bus: ContractBus) -> SinkFactory:
        config = sink_config(plugin, f"http://127.0.0.1:{free_port()}")  # nothing listens

        def make() -> Sink:
            assert plugin.create_sink is not None
            return plugin.create_sink(config, contract_bus.context("shop"))
        return make


    @pytest.fixture
    def make_silent_sink(self, plugin: ConnectorPlugin,
                         contract_bus: ContractBus) -> Iterator[SinkFactory]:
        # a "shop" that answers every request with an empty 200
        empty = Answer(status=200, headers={"Content-Type": "application/json"},
                       body=lambda: [b""])
        with HostileHttp(empty) as server:
            config = sink_config(plugin, server.url)

            def make() -> Sink:
                assert plugin.create_sink is not None
                return plugin.create_sink(config, contract_bus.context("shop"))
            yield make


class TestRestShopOrderPoll(SourceContract):
    @pytest.fixture
    def make_source(self, plugin: ConnectorPlugin,
                    shop: tuple[ShopState, str]) -> SourceFactory:
        assert plugin.source_config is not None and plugin.create_source is not None
        config = plugin.source_config.model_validate({"poll": {
            "shop": "acme", "platform": "shopify", "base_url": shop[1],
            "auth": {"kind": "token", "token": TOKEN}, "page_size": 5, "interval": "1h"}})
        create = plugin.create_source

        def make(context: ConnectorContext) -> PollingSource:
            source = create(config, context)
            assert isinstance(source, PollingSource)
            return source
        return make

    @pytest.fixture
    def feed(self, shop: tuple[ShopState, str]) -> Feed:
        def add(count: int) -> None:
            shop[0].add_orders(count)
        return add

    @pytest.fixture
    def acknowledged(self) -> AckCount:
        return lambda: None  # the cursor moves in the transaction that stages the orders


class TestRestShopWebhooks(SourceContract):
    """The webhook receiver: a unit of input is an order webhook the shop keeps sending until it
    is answered 2xx — which the receiver does only after the bus confirmed the envelope."""

    @pytest.fixture
    def port(self) -> int:
        return free_port()

    @pytest.fixture
    def make_source(self, plugin: ConnectorPlugin, port: int) -> SourceFactory:
        assert plugin.source_config is not None and plugin.create_source is not None
        config = plugin.source_config.model_validate({"webhooks": {
            "port": port, "answer_within": "800ms",
            "shops": {"acme": {"platform": "shopify", "secrets": [WEBHOOK_SECRET]}}}})
        create = plugin.create_source

        def make(context: ConnectorContext) -> Source:
            source = create(config, context)
            assert isinstance(source, Source)
            return source
        return make

    @pytest.fixture
    def answered(self) -> list[str]:
        return []

    @pytest.fixture
    def feed(self, port: int, answered: list[str]) -> Iterator[Feed]:
        # the shop retries every 50 ms for up to a minute, as a real shop retries for hours
        sender = WebhookSender(retry_delays=(0.05,), max_attempts=1200)
        subscription = Subscription(f"http://127.0.0.1:{port}/webhooks/acme", "shopify",
                                    WEBHOOK_SECRET.encode())
        threads: list[threading.Thread] = []
        lock = threading.Lock()

        def deliver(order_id: int) -> None:
            delivery = sender.delivery(subscription, {"id": order_id, "total_price": "9.90"})
            attempts = sender.send(delivery)
            if attempts and attempts[-1].status is not None and attempts[-1].status < 300:
                with lock:
                    answered.append(delivery.delivery_id)

        def add(count: int) -> None:
            for _ in range(count):
                thread = threading.Thread(target=deliver, args=(7_000 + len(threads),),
                                          daemon=True)
                threads.append(thread)
                thread.start()
        try:
            yield add
        finally:
            for thread in threads:
                thread.join(90)
            sender.close()

    @pytest.fixture
    def acknowledged(self, answered: list[str]) -> AckCount:
        return lambda: len(answered)
