"""The ``jsonl`` source passes the kit's SourceContract: one envelope per line, the cursor moved
only past lines the bus confirmed."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from connectors.jsonl import JsonlSource, JsonlSourceConfig
from integration_bus.testing import ContractBus, SourceContract
from integration_bus.testing.source_contract import INSTANCE, AckCount, Feed, SourceFactory


class TestJsonlSource(SourceContract):
    @pytest.fixture
    def path(self, tmp_path: Path) -> Path:
        return tmp_path / "orders.jsonl"

    @pytest.fixture
    def make_source(self, path: Path) -> SourceFactory:
        config = JsonlSourceConfig(path=str(path), type="order.created", follow=True,
                                   poll_interval="50ms")
        return lambda context: JsonlSource(config, context)

    @pytest.fixture
    def feed(self, path: Path) -> Feed:
        fed = [0]

        def add(count: int) -> None:
            with path.open("ab") as handle:
                for _ in range(count):
                    fed[0] += 1
                    handle.write(orjson.dumps({"order": fed[0], "total": "9.90"}) + b"\n")
        return add

    @pytest.fixture
    def acknowledged(self, path: Path, contract_bus: ContractBus) -> AckCount:
        cursors = contract_bus.context(INSTANCE).cursors

        def lines_past_the_cursor() -> int:
            raw = cursors.get(str(path))
            return int(orjson.loads(raw)["line"]) if raw else 0
        return lines_past_the_cursor
