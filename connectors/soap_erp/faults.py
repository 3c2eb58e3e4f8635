"""SOAP faults: reading them (1.1 and 1.2) and deciding what the runtime does with them.

The decision table (``FaultRules`` in the sink's config adds the site-specific rows)::

    what came back                                  decision      error raised
    ----------------------------------------------  ------------  ---------------------------
    fault matching a configured ``transient`` rule  retry         ErpUnavailable
    1.1 Client* / 1.2 Sender                        dead letter   ErpRejected
    1.1 Server* / 1.2 Receiver, matching a
        configured ``business`` rule                dead letter   ErpBusinessFault
    1.1 Server* / 1.2 Receiver (other)              retry         ErpUnavailable
    VersionMismatch / MustUnderstand / other codes  dead letter   ErpRejected
    HTTP 5xx without a fault, 502/503/504 pages     retry         ErpUnavailable
    an HTML (or other non-XML) error page           retry         ErpUnavailable (+ excerpt)
    timeout / connection error / dropped answer     retry         ErpUnavailable (``in_doubt``)
    HTTP 401/403                                    dead letter   ErpRejected
    a hostile or oversized body                     dead letter   XmlSecurityError

"retry" errors count towards the endpoint's circuit breaker; "dead letter" errors do not (the
ERP answered, it is up). Business faults are never retried: the same posting would be refused
again, so it goes to the dead letters at once with the ERP's own code and text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from lxml import etree

from connectors.soap_erp.config import FaultRule, FaultRules
from integration_bus.connector import BusError, PermanentError, TransientError

__all__ = [
    "SOAP11_ENV",
    "SOAP12_ENV",
    "ErpBusinessFault",
    "ErpRejected",
    "ErpUnavailable",
    "FaultClassifier",
    "SoapFault",
    "read_fault",
]

SOAP11_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"


class ErpUnavailable(TransientError):
    """The ERP could not take the call now (outage, overload, timeout): retry later. Context
    ``in_doubt=True`` when the request may have reached the ERP (look it up before resending).
    """


class ErpRejected(PermanentError):
    """The ERP refused the request itself (Client/Sender fault, 4xx): retrying cannot help."""


class ErpBusinessFault(PermanentError):
    """The ERP refused the posting for a business reason (insufficient stock, blocked
    material): a Server/Receiver fault matched by a configured ``business`` rule."""


@dataclass(frozen=True)
class SoapFault:
    """A fault as sent: SOAP version, code (``Client``, ``Server.Deficit``, ``Sender``...),
    1.2 subcodes, reason text and the detail's text content (flattened)."""

    version: Literal["1.1", "1.2"]
    code: str
    subcodes: tuple[str, ...]
    reason: str
    detail: str

    @property
    def kind(self) -> str:
        """``client``, ``server`` or ``other`` by the fault code's class."""
        head = self.code.split(".", 1)[0]
        if head in ("Client", "Sender"):
            return "client"
        if head in ("Server", "Receiver"):
            return "server"
        return "other"

    def names(self) -> tuple[str, ...]:
        """The code and subcodes (local names) a rule's ``code`` is matched against."""
        return (self.code, *self.subcodes)


def _local(qname: str | None) -> str:
    text = (qname or "").strip()
    return text.rsplit(":", 1)[-1] if ":" in text else text


def _text(element: etree._Element | None) -> str:
    if element is None:
        return ""
    return " ".join(" ".join(element.itertext()).split())


def read_fault(body: etree._Element) -> SoapFault | None:
    """The fault in a SOAP Body, or None when the body holds no fault."""
    fault = body.find(f"{{{SOAP11_ENV}}}Fault")
    if fault is not None:
        return SoapFault("1.1", _local(fault.findtext("faultcode")), (),
                         (fault.findtext("faultstring") or "").strip(),
                         _text(fault.find("detail")))
    fault = body.find(f"{{{SOAP12_ENV}}}Fault")
    if fault is None:
        return None
    env = f"{{{SOAP12_ENV}}}"
    code = fault.find(f"{env}Code")
    value = _local(code.findtext(f"{env}Value")) if code is not None else ""
    subcodes: list[str] = []
    node = code.find(f"{env}Subcode") if code is not None else None
    while node is not None:
        subcodes.append(_local(node.findtext(f"{env}Value")))
        node = node.find(f"{env}Subcode")
    reason = fault.find(f"{env}Reason")
    text = reason.findtext(f"{env}Text") if reason is not None else ""
    return SoapFault("1.2", value, tuple(subcodes), (text or "").strip(),
                     _text(fault.find(f"{env}Detail")))


def _matches(rule: FaultRule, fault: SoapFault) -> bool:
    if rule.code is not None and not any(re.fullmatch(rule.code, n) for n in fault.names()):
        return False
    if rule.string is not None and not re.search(rule.string, fault.reason):
        return False
    return rule.detail is None or re.search(rule.detail, fault.detail) is not None


class FaultClassifier:
    """Applies the decision table above to a fault (the config's rules first)."""

    def __init__(self, rules: FaultRules) -> None:
        self._rules = rules

    def error(self, fault: SoapFault, *, operation: str, **context: object) -> BusError:
        """The error to raise for ``fault`` in ``operation`` (context: document number, ...)."""
        facts = {"operation": operation, "fault_code": ".".join(fault.names()),
                 "fault_string": fault.reason[:500], "fault_detail": fault.detail[:500] or None,
                 "soap_version": fault.version, **context}
        said = f"{operation}: ERP fault {fault.code}" + \
            (f" ({'/'.join(fault.subcodes)})" if fault.subcodes else "") + f": {fault.reason}"
        if any(_matches(rule, fault) for rule in self._rules.transient):
            return ErpUnavailable(said, decision="retry", **facts)
        if fault.kind == "server":
            if any(_matches(rule, fault) for rule in self._rules.business):
                return ErpBusinessFault(said, decision="dead_letter", **facts)
            return ErpUnavailable(said, decision="retry", **facts)
        return ErpRejected(said, decision="dead_letter", **facts)
