"""The ``pos_file`` sink and source pass the kit's contract suites: price files rendered for
the tills (one per key, looked up after a crash), and daily sales files read into one envelope
per sale line, archived only once every line was confirmed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from connectors.pos_file import PosFileSink, PosFileSinkConfig, PosFileSource
from connectors.pos_file.config import PosFileSourceConfig
from connectors.pos_file.lane import daily_file_bytes
from integration_bus.connector import Envelope
from integration_bus.testing import ContractBus, SinkContract, SourceContract
from integration_bus.testing.sink_contract import EffectCount, EnvelopeFactory, SinkFactory
from integration_bus.testing.source_contract import AckCount, Feed, SourceFactory
from tests.pos_file.support import DAILY, LAYOUTS, daily_layout, drop, files_in

PRICES = LAYOUTS / "price_download.yaml"


def price_batch(key: str, store: str = "0042") -> Envelope:
    return Envelope.create("pos.price_batch", {"store": store, "records": [
        {"sku": "A1", "description": "Pen", "price": "1.50", "currency": "EUR",
         "valid_from": "2026-01-01"}]}, source="contract", idempotency_key=key)


class TestPosFileSink(SinkContract):
    @pytest.fixture
    def make_sink(self, contract_bus: ContractBus, tmp_path: Path) -> SinkFactory:
        config = PosFileSinkConfig(layout=str(PRICES), folder=str(tmp_path / "outbox/{store}"),
                                   file_name="PRICES_{store}_{key}.CSV")
        return lambda: PosFileSink(config, contract_bus.context("prices"))

    @pytest.fixture
    def make_envelope(self) -> EnvelopeFactory:
        return price_batch

    @pytest.fixture
    def effects(self, tmp_path: Path) -> EffectCount:
        folder = tmp_path / "outbox" / "0042"

        def count(key: str) -> int:
            # {key} in a file name is the first 16 hex digits of the key's SHA-256
            name = f"PRICES_0042_{hashlib.sha256(key.encode()).hexdigest()[:16]}.CSV"
            return len(files_in(folder, name)) if folder.exists() else 0
        return count

    @pytest.fixture
    def refused_envelope(self) -> Envelope:
        return price_batch("contract-refused", store="../../etc")

    @pytest.fixture
    def make_unreachable_sink(self, contract_bus: ContractBus, tmp_path: Path) -> SinkFactory:
        (tmp_path / "share").write_text("the POS share is not mounted: a file sits here")
        config = PosFileSinkConfig(layout=str(PRICES), folder=str(tmp_path / "share/{store}"),
                                   file_name="PRICES_{store}_{key}.CSV")
        return lambda: PosFileSink(config, contract_bus.context("prices"))


class TestPosFileSource(SourceContract):
    @pytest.fixture
    def inbox(self, tmp_path: Path) -> Path:
        folder = tmp_path / "inbox"
        folder.mkdir()
        return folder

    @pytest.fixture
    def make_source(self, inbox: Path) -> SourceFactory:
        config = PosFileSourceConfig.model_validate({
            "inboxes": [{"path": str(inbox)}], "layout": str(DAILY), "pattern": "*.DAT",
            "store_pattern": r"SALES_(?P<store>\d{4})_", "rescan_interval": "200ms",
            "poll_interval": "50ms", "node": "node-a"})
        return lambda context: PosFileSource(config, context)

    @pytest.fixture
    def feed(self, inbox: Path) -> Feed:
        fed = [0]

        def add(count: int) -> None:
            # one file per unit, one sale line in it
            for _ in range(count):
                fed[0] += 1
                drop(inbox, f"SALES_0042_20240301_{fed[0]}.DAT",
                     daily_file_bytes(daily_layout(), store="0042", records=1, seed=fed[0],
                                     seq=fed[0]))
        return add

    @pytest.fixture
    def acknowledged(self, inbox: Path) -> AckCount:
        archive = inbox.parent / "inbox.work" / "archive"
        return lambda: len(files_in(archive, "SALES_*")) if archive.exists() else 0
