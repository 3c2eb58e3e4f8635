"""Plugin state is per Bus: soap_erp is registered by its factory, so two buses in one process
(even given one registry) build their own plugins, and a circuit breaker one bus opened does
not refuse the other bus's calls to the same ERP."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.soap_erp.fakeerp import ErpServer, Injection
from connectors.soap_erp.faults import ErpUnavailable
from integration_bus.connector import CircuitOpen
from integration_bus.registry import Registry
from integration_bus.runtime import Bus
from integration_bus.settings import load_config
from tests.soap_erp.support import SECRETS, posting, sink_yaml, write_config
from tests.support.probe import Target, probe_plugin, registry_with


def _bus(root: Path, url: str, registry: Registry) -> Bus:
    config = write_config(root, "", sinks=sink_yaml(url, failures=3, open_for="60s"))
    return Bus(load_config(config, registry, SECRETS), registry=registry)


def test_a_breaker_one_bus_opened_stays_closed_in_another_bus_of_the_process(
        tmp_path: Path, erp: ErpServer) -> None:
    # Given two buses in one process, built with one registry of the installed entry points,
    # each with a soap_erp sink to the same fake ERP over HTTP
    registry = registry_with(probe_plugin(Target()))
    with _bus(tmp_path / "a", erp.url, registry).open() as bus_a, \
            _bus(tmp_path / "b", erp.url, registry).open() as bus_b:
        sink_a, sink_b = bus_a.sink("erp"), bus_b.sink("erp")
        try:
            # When the ERP fails bus A's next three calls (then recovers)
            erp.plan.set(Injection(mode="server_fault", operation="PostStockAdjustment",
                                   count=3))
            for n in range(3):
                with pytest.raises(ErpUnavailable):
                    sink_a.deliver(posting(n))
            # Then bus A's breaker is open: it refuses without calling the ERP
            with pytest.raises(CircuitOpen):
                sink_a.deliver(posting(3))
            assert erp.state.count("PostStockAdjustment") == 3
            # and bus B's breaker for the same address is closed: its posting goes through
            sink_b.deliver(posting(4))
            assert erp.state.count("PostStockAdjustment") == 4
            assert erp.state.document_count("stock_posting") == 1
            # and bus A still refuses (its own breaker, untouched by B's success)
            with pytest.raises(CircuitOpen):
                sink_a.deliver(posting(5))
        finally:
            sink_a.close()
            sink_b.close()


def test_each_bus_builds_its_own_plugin_from_a_factory_and_keeps_plugin_objects() -> None:
    # Given a registry of the installed entry points plus a plugin given as an object
    probe = probe_plugin(Target())
    registry = registry_with(probe)
    # When two buses take their plugins from it
    first, second = registry.fresh(), registry.fresh()
    # Then a factory-registered plugin is a new object per bus, a plugin object is shared
    assert first.get("soap_erp") is not second.get("soap_erp")
    assert first.get("rest_shop") is not second.get("rest_shop")
    assert first.get("soap_erp").create_sink is not second.get("soap_erp").create_sink
    assert first.get("probe") is second.get("probe") is probe
    assert first.names() == second.names() == registry.names()
