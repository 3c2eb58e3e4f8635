"""Fixtures for the soap_erp tests: the fake ERP on loopback, sinks built from YAML by a bus."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from connectors.soap_erp import SoapErpSink, make_plugin
from connectors.soap_erp.fakeerp import ErpServer, ErpState
from integration_bus.connector import ConnectorPlugin
from tests.soap_erp.support import open_bus, sink_yaml, write_config

MakeSink = Callable[..., SoapErpSink]


@pytest.fixture
def erp() -> Iterator[ErpServer]:
    """The fake ERP on a free loopback port; materials MAT-1..MAT-3 with 100 on hand."""
    state = ErpState()
    for i in (1, 2, 3):
        state.seed(f"MAT-{i}", "1042", "0001", 100)
    with ErpServer(state) as server:
        yield server


@pytest.fixture
def plugin() -> ConnectorPlugin:
    """A fresh soap_erp plugin per test (its own circuit breakers and WSDL cache)."""
    return make_plugin()


@pytest.fixture
def make_sink(tmp_path: Path, erp: ErpServer,
              plugin: ConnectorPlugin) -> Iterator[MakeSink]:
    """Build soap_erp sinks from YAML through an embedded bus (real config validation)."""
    made = itertools.count()
    with ExitStack() as stack:
        def make(url: str | None = None, **options: Any) -> SoapErpSink:
            root = tmp_path / f"bus-{next(made)}"
            bus = open_bus(write_config(root, "", sinks=sink_yaml(url or erp.url, **options)),
                           plugin=plugin)
            stack.callback(bus.close)
            sink = bus.sink("erp")
            assert isinstance(sink, SoapErpSink)
            stack.callback(sink.close)
            return sink
        yield make
