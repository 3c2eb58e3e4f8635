"""The ``soap_erp`` sink (stock postings, against the fake ERP on real SOAP/HTTP) and its stock
change poll pass the kit's contract suites."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from connectors.soap_erp import document_number, make_plugin
from connectors.soap_erp.config import DocumentNumberConfig
from connectors.soap_erp.fakeerp import WSDL_DIR, ErpServer, ErpState, Injection
from integration_bus.connector import (
    ConnectorContext,
    ConnectorPlugin,
    Envelope,
    PollingSource,
    Sink,
)
from integration_bus.testing import ContractBus, SinkContract, SourceContract
from integration_bus.testing.sink_contract import EffectCount, EnvelopeFactory, SinkFactory
from integration_bus.testing.source_contract import AckCount, Feed, SourceFactory
from tests.support.services import free_port

WSDL = str(WSDL_DIR / "erp.wsdl")
PORT = {"wsdl": WSDL, "service": "ErpService", "port": "StockPort"}


@pytest.fixture
def erp() -> Iterator[ErpServer]:
    """The fake ERP on a free loopback port, with no stock and no changes yet."""
    with ErpServer(ErpState()) as server:
        yield server


@pytest.fixture
def plugin() -> ConnectorPlugin:
    return make_plugin()


def sink_config(plugin: ConnectorPlugin, address: str) -> BaseModel:
    assert plugin.sink_config is not None
    return plugin.sink_config.model_validate({
        **PORT, "address": address, "operation": "PostStockAdjustment",
        "document_number": {"field": "DocumentHeader.ExternalReference"},
        "lookup": {"operation": "FindDocument"},
        "timeouts": {"connect": "1s", "operation": "2s"},
        "breaker": {"failures": 50, "open_for": "1s"}})


def posting(key: str, **item: Any) -> Envelope:
    return Envelope.create("erp.stock_posting.requested", {
        "DocumentHeader": {"ExternalReference": "set-by-the-sink", "PostingDate": "2024-03-01",
                           "HeaderText": "Inventory count +"},
        "Item": {"Material": "MAT-1", "Plant": "1042", "StorageLocation": "0001",
                 "MovementType": "701", "Quantity": 1, "UnitOfEntry": "EA",
                 "SourceVersion": 1, **item}}, source="contract", idempotency_key=key)


class TestSoapErpSink(SinkContract):
    @pytest.fixture
    def make_sink(self, plugin: ConnectorPlugin, erp: ErpServer,
                  contract_bus: ContractBus) -> SinkFactory:
        config = sink_config(plugin, erp.url)

        def make() -> Sink:
            assert plugin.create_sink is not None
            return plugin.create_sink(config, contract_bus.context("erp"))
        return make

    @pytest.fixture
    def make_envelope(self) -> EnvelopeFactory:
        return posting

    @pytest.fixture
    def effects(self, erp: ErpServer) -> EffectCount:
        def documents(key: str) -> int:
            reference = document_number(key, DocumentNumberConfig())
            with erp.state.lock:
                return sum(1 for d in erp.state.documents.values() if d.reference == reference)
        return documents

    @pytest.fixture
    def refused_envelope(self) -> Envelope:
        return posting("contract-refused", Colour="blue")  # not in the WSDL's item type

    @pytest.fixture
    def make_unreachable_sink(self, plugin: ConnectorPlugin,
                              contract_bus: ContractBus) -> SinkFactory:
        config = sink_config(plugin, f"http://127.0.0.1:{free_port()}/erp")  # nothing listens

        def make() -> Sink:
            assert plugin.create_sink is not None
            return plugin.create_sink(config, contract_bus.context("erp"))
        return make


    @pytest.fixture
    def make_silent_sink(self, erp: ErpServer, make_sink: SinkFactory) -> SinkFactory:
        # the ERP answers HTTP 200 with an empty body, posting nothing
        erp.plan.set(Injection(mode="canned", status=200, body="",
                               operation="PostStockAdjustment"))
        return make_sink


class TestSoapErpStockPoll(SourceContract):
    @pytest.fixture
    def make_source(self, plugin: ConnectorPlugin, erp: ErpServer) -> SourceFactory:
        assert plugin.source_config is not None and plugin.create_source is not None
        config = plugin.source_config.model_validate({
            **PORT, "address": erp.url, "timeouts": {"connect": "1s", "operation": "5s"},
            "poll": {"operation": "GetStockChanges", "page_size": 2, "interval": "1h"}})
        create = plugin.create_source

        def make(context: ConnectorContext) -> PollingSource:
            source = create(config, context)
            assert isinstance(source, PollingSource)
            return source
        return make

    @pytest.fixture
    def feed(self, erp: ErpServer) -> Feed:
        fed = [0]

        def add(count: int) -> None:
            for _ in range(count):
                fed[0] += 1
                erp.state.seed(f"SRC-{fed[0]:05d}", "1042", "0001", fed[0])
        return add

    @pytest.fixture
    def acknowledged(self) -> AckCount:
        return lambda: None  # the cursor moves in the transaction that stages the changes
