"""The small built-in sinks pass the kit's SinkContract: ``jsonl``, ``log``, ``bus``,
``projection`` and ``availability``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import structlog
from structlog.testing import LogCapture

from connectors.availability import AvailabilityGate, AvailabilityGateConfig
from connectors.bus import BusSink, BusSinkConfig
from connectors.jsonl import JsonlSink, JsonlSinkConfig
from connectors.log import LogSink, LogSinkConfig
from connectors.projection import ProjectionSink, ProjectionSinkConfig
from integration_bus.connector import Envelope
from integration_bus.testing import ContractBus, SinkContract
from integration_bus.testing.sink_contract import EffectCount, EnvelopeFactory, SinkFactory


def order(key: str) -> Envelope:
    return Envelope.create("order.created", {"order": key, "total": "12.50"}, source="contract",
                           idempotency_key=key, correlation_id=f"corr-{key}")


class TestJsonlSink(SinkContract):
    @pytest.fixture
    def make_sink(self, contract_bus: ContractBus, tmp_path: Path) -> SinkFactory:
        config = JsonlSinkConfig(path=str(tmp_path / "out.jsonl"))
        return lambda: JsonlSink(config, contract_bus.context("out"))

    @pytest.fixture
    def make_envelope(self) -> EnvelopeFactory:
        return order

    @pytest.fixture
    def effects(self, tmp_path: Path) -> EffectCount:
        def count(key: str) -> int:
            path = tmp_path / "out.jsonl"
            lines = path.read_bytes().splitlines() if path.exists() else []
            return sum(1 for line in lines if orjson.loads(line)["idempotency_key"] == key)
        return count

    @pytest.fixture
    def make_unreachable_sink(self, contract_bus: ContractBus, tmp_path: Path) -> SinkFactory:
        # the "file" is a directory: every append fails, as on a volume gone read-only
        (tmp_path / "not-a-file").mkdir()
        config = JsonlSinkConfig(path=str(tmp_path / "not-a-file"))
        return lambda: JsonlSink(config, contract_bus.context("out"))


class TestLogSink(SinkContract):
    # a log cannot be asked what it holds: the ledger alone keeps deliveries single
    idempotent_target = False

    @pytest.fixture
    def capture(self) -> LogCapture:
        return LogCapture()

    @pytest.fixture
    def make_sink(self, contract_bus: ContractBus, capture: LogCapture) -> SinkFactory:
        logger = structlog.wrap_logger(None, processors=[capture])

        def make() -> LogSink:
            context = dataclasses.replace(contract_bus.context("log"), log=logger)
            return LogSink(LogSinkConfig(), context)
        return make

    @pytest.fixture
    def make_envelope(self) -> EnvelopeFactory:
        return order

    @pytest.fixture
    def effects(self, capture: LogCapture) -> EffectCount:
        return lambda key: sum(1 for entry in capture.entries
                               if entry.get("idempotency_key") == key)


class TestBusSink(SinkContract):
    """The bus sink's target is ``bus.ingress``: its effect is a published envelope, and the
    next routes' ledger keeps one per idempotency key (derived deterministically)."""

    @pytest.fixture
    def make_sink(self, contract_bus: ContractBus) -> SinkFactory:
        config = BusSinkConfig(type="order.accepted")
        return lambda: BusSink(config, contract_bus.context("accepted"))

    @pytest.fixture
    def make_envelope(self) -> EnvelopeFactory:
        return order

    @pytest.fixture
    def effects(self, contract_bus: ContractBus) -> EffectCount:
        return lambda key: len({e.idempotency_key for e in contract_bus.confirmed
                                if e.correlation_id == f"corr-{key}"})

    @pytest.fixture
    def make_unreachable_sink(self, contract_bus: ContractBus) -> Iterator[SinkFactory]:
        contract_bus.gate.close()  # the broker refuses every publish
        yield lambda: BusSink(BusSinkConfig(type="order.accepted"),
                              contract_bus.context("accepted"))
        contract_bus.gate.open()


def stock_level(key: str) -> Envelope:
    return Envelope.create("inventory.level", {"sku": f"SKU-{key}", "location": "STORE-1",
                                               "on_hand": "7", "version": 3},
                           source="contract", idempotency_key=key)


class TestProjectionSink(SinkContract):
    """The projection's effect is the level of a (sku, location), set by compare-and-set on
    the version: applying the same level again changes nothing."""

    @pytest.fixture
    def make_sink(self, contract_bus: ContractBus) -> SinkFactory:
        return lambda: ProjectionSink(ProjectionSinkConfig(), contract_bus.context("stock"))

    @pytest.fixture
    def make_envelope(self) -> EnvelopeFactory:
        return stock_level

    @pytest.fixture
    def effects(self, contract_bus: ContractBus) -> EffectCount:
        def count(key: str) -> int:
            pair = (f"SKU-{key}", "STORE-1")
            level = contract_bus.bus.stock.get(*pair)
            return 0 if level is None else 1
        return count

    @pytest.fixture
    def refused_envelope(self) -> Envelope:
        return Envelope.create("inventory.level", {"sku": "SKU-X", "on_hand": "seven"},
                               source="contract", idempotency_key="contract-refused")


class TestAvailabilityGate(SinkContract):
    """The gate's effect is the accepted order, published again as ``order.accepted`` (one per
    key downstream); an order that does not fit is a business dead letter (StockShort)."""

    @pytest.fixture
    def make_sink(self, contract_bus: ContractBus) -> SinkFactory:
        (outcome,) = contract_bus.bus.stock.apply_envelopes([Envelope.create(
            "inventory.level", {"sku": "SKU-1", "location": "STORE-1", "on_hand": "1000",
                                "version": 1}, source="contract")])
        assert outcome is None
        config = AvailabilityGateConfig(type="order.accepted", location="STORE-1")
        return lambda: AvailabilityGate(config, contract_bus.context("gate"))

    @pytest.fixture
    def make_envelope(self) -> EnvelopeFactory:
        def web_order(key: str, quantity: int = 1) -> Envelope:
            return Envelope.create("order.placed", {
                "order_id": key, "lines": [{"sku": "SKU-1", "quantity": quantity}]},
                source="contract", idempotency_key=key, correlation_id=f"corr-{key}")
        return web_order

    @pytest.fixture
    def effects(self, contract_bus: ContractBus) -> EffectCount:
        return lambda key: len({e.idempotency_key for e in contract_bus.confirmed
                                if e.correlation_id == f"corr-{key}"})

    @pytest.fixture
    def refused_envelope(self) -> Envelope:
        return Envelope.create("order.placed", {
            "order_id": "big", "lines": [{"sku": "SKU-1", "quantity": 5000}]},
            source="contract", idempotency_key="contract-refused",
            correlation_id="corr-contract-refused")

    @pytest.fixture
    def make_unreachable_sink(self, contract_bus: ContractBus,
                              make_sink: SinkFactory) -> Iterator[SinkFactory]:
        contract_bus.gate.close()  # the broker refuses the accepted order's publish
        yield make_sink
        contract_bus.gate.open()
