"""A fake retail ERP over real HTTP SOAP, for tests, benchmarks and the demo (``bus sim erp``).

``ErpState`` holds stock, documents (deduplicated by external reference) and the change log;
``ErpService`` speaks SOAP 1.1/1.2, document/literal and rpc/literal, as described by the
shipped WSDL (``connectors/soap_erp/wsdl``); ``FaultPlan`` injects slowness, timeouts, 500s,
faults, HTML pages, dropped connections and hostile XML; ``ErpServer`` runs it on loopback.
"""

from __future__ import annotations

from connectors.soap_erp.fakeerp.injection import FaultPlan, Injection
from connectors.soap_erp.fakeerp.server import WSDL_DIR, ErpServer
from connectors.soap_erp.fakeerp.service import ErpService, Reply
from connectors.soap_erp.fakeerp.state import Change, Document, ErpFault, ErpState

__all__ = ["WSDL_DIR", "Change", "Document", "ErpFault", "ErpServer", "ErpService", "ErpState",
           "FaultPlan", "Injection", "Reply"]
