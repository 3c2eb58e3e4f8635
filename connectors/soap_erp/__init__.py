"""``soap_erp``: an ERP over SOAP — idempotent postings, honest fault handling, hardened XML.

Sink: calls one operation of a WSDL shipped with the config (document/literal wrapped,
rpc/literal, SOAP 1.1 and 1.2, imported XSDs, several services and ports; rpc/encoded
operations refused by name); an external document
number derived from the idempotency key in every posting; a lookup by that number before any
resend; a circuit breaker per endpoint; a fault classification table; optional request/reply.

Source: a scheduled poll of an operation with a cursor (e.g. stock changes since a sequence),
staged with the cursor through the outbox.

Registered by its factory :func:`make_plugin` (each bus builds its own plugin, with its own
circuit breakers and parsed WSDLs). The fake ERP (``connectors.soap_erp.fakeerp``,
``bus sim erp``) is a simulator of its own entry-point group, never imported by the connector.
See docs/soap-erp.md.
"""

from __future__ import annotations

from connectors.soap_erp.breaker import BreakerPool, CircuitBreaker
from connectors.soap_erp.config import SoapErpSinkConfig, SoapErpSourceConfig
from connectors.soap_erp.metrics import SoapMetrics
from connectors.soap_erp.sink import SoapErpSink, document_number
from connectors.soap_erp.source import SoapPoller
from connectors.soap_erp.wsdl import WsdlCache
from connectors.soap_erp.xmlsafe import SafeXml, XmlSecurityError
from integration_bus.connector import ConnectorContext, ConnectorPlugin

__all__ = [
    "SafeXml",
    "SoapErpSink",
    "SoapErpSinkConfig",
    "SoapErpSourceConfig",
    "SoapPoller",
    "XmlSecurityError",
    "document_number",
    "make_plugin",
]


class _Factory:
    """Builds sinks and sources; owns what they share in a process: parsed WSDLs and the
    circuit breakers (one per endpoint address)."""

    def __init__(self) -> None:
        self.wsdls = WsdlCache()
        self.breakers = BreakerPool()

    def _breaker(self, config: SoapErpSinkConfig | SoapErpSourceConfig,
                 context: ConnectorContext) -> object:
        metrics = SoapMetrics.of(context.metrics.registry)
        lease = (config.timeouts.connect + config.timeouts.operation) / 1000 + 1.0

        def get(address: str) -> CircuitBreaker:
            return self.breakers.get(address, config.breaker, probe_lease=lease,
                                     metrics=metrics)
        return get

    def sink(self, config: SoapErpSinkConfig, context: ConnectorContext) -> SoapErpSink:
        return SoapErpSink(config, context, document=self.wsdls.load(context.resolve(
            config.wsdl)), breaker=self._breaker(config, context))  # type: ignore[arg-type]

    def source(self, config: SoapErpSourceConfig, context: ConnectorContext) -> SoapPoller:
        return SoapPoller(config, context, document=self.wsdls.load(context.resolve(
            config.wsdl)), breaker=self._breaker(config, context))


def make_plugin() -> ConnectorPlugin:
    """A fresh ``soap_erp`` plugin with its own breakers and WSDL cache: the entry point,
    called once per bus, so a breaker one bus opened never refuses another bus's calls."""
    factory = _Factory()
    return ConnectorPlugin(
        name="soap_erp",
        summary="sink: ERP postings over SOAP (idempotent document numbers, lookup before "
                "resend, circuit breaker, fault table, request/reply); source: a polled "
                "operation with a cursor",
        source_config=SoapErpSourceConfig, create_source=factory.source,
        sink_config=SoapErpSinkConfig, create_sink=factory.sink)

