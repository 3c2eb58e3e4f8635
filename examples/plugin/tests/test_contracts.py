"""The example plugin passes the bus's contract suites, importing only the public API."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from integration_bus.connector import ConnectorContext, Envelope, Sink
from integration_bus.testing import (
    AckCount,
    ContractBus,
    EffectCount,
    EnvelopeFactory,
    Feed,
    SinkContract,
    SinkFactory,
    SourceContract,
    SourceFactory,
)

from bus_example_files import FilesSink, FilesSinkConfig, FilesSource, FilesSourceConfig, plugin
from bus_example_files.sink import file_name


def test_the_plugin_is_registered_under_the_connectors_entry_point_group() -> None:
    (found,) = [ep for ep in entry_points(group="integration_bus.connectors")
                if ep.name == "example_files"]
    assert found.load() is plugin


class TestFilesSink(SinkContract):
    @pytest.fixture
    def make_sink(self, contract_bus: ContractBus, tmp_path: Path) -> SinkFactory:
        config = FilesSinkConfig(folder=str(tmp_path / "out"))

        def make() -> Sink:
            return FilesSink(config, contract_bus.context("out"))
        return make

    @pytest.fixture
    def make_envelope(self) -> EnvelopeFactory:
        def order(key: str) -> Envelope:
            return Envelope.create("order.created", {"order": key}, source="test",
                                   idempotency_key=key)
        return order

    @pytest.fixture
    def effects(self, tmp_path: Path) -> EffectCount:
        def files(key: str) -> int:
            return int((tmp_path / "out" / file_name(key)).is_file())
        return files

    @pytest.fixture
    def refused_envelope(self) -> Envelope:
        return Envelope.create("order.created", ["not", "an", "object"], source="test",
                               idempotency_key="refused")

    @pytest.fixture
    def make_unreachable_sink(self, contract_bus: ContractBus,
                              tmp_path: Path) -> SinkFactory:
        (tmp_path / "gone").mkdir()
        (tmp_path / "gone" / "out").write_text("")  # a file where the folder should be

        def make() -> Sink:
            config = FilesSinkConfig(folder=str(tmp_path / "gone" / "out" / "sub"))
            return FilesSink(config, contract_bus.context("out"))
        return make


class TestFilesSource(SourceContract):
    @pytest.fixture
    def inbox(self, tmp_path: Path) -> Path:
        folder = tmp_path / "inbox"
        folder.mkdir()
        return folder

    @pytest.fixture
    def make_source(self, inbox: Path) -> SourceFactory:
        config = FilesSourceConfig(folder=str(inbox), type="order.created",
                                   poll_interval="50ms")

        def make(context: ConnectorContext) -> FilesSource:
            return FilesSource(config, context)
        return make

    @pytest.fixture
    def feed(self, inbox: Path) -> Feed:
        fed = [0]

        def drop(count: int) -> None:
            for _ in range(count):
                fed[0] += 1
                temp = inbox / f"order-{fed[0]}.tmp"
                temp.write_text(json.dumps({"order": fed[0]}))
                temp.rename(inbox / f"order-{fed[0]}.json")
        return drop

    @pytest.fixture
    def acknowledged(self, inbox: Path) -> AckCount:
        return lambda: len(list((inbox / "done").glob("*.json")))
