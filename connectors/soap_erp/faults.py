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
    2xx without the operation's response element    retry         ErpNoAnswer (``in_doubt``)
      (empty body, another operation's response),
      or without the document number (sink config)
    HTTP 401/403                                    dead letter   ErpRejected
    a hostile or oversized body                     dead letter   XmlSecurityError

A fault is read by element name, its children qualified or not; codes and subcodes are QNames
resolved where they are written (see :func:`read_fault`). A rule matches on a code's or
subcode's QName (``qname``), local name (``code``), the reason or the detail.

"retry" errors count towards the endpoint's circuit breaker; "dead letter" errors do not (the
ERP answered, it is up). Business faults are never retried: the same posting would be refused
again, so it goes to the dead letters at once with the ERP's own code and text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, NamedTuple

from lxml import etree

from connectors.soap_erp.config import FaultRule, FaultRules, resolve_qname
from integration_bus.connector import BusError, PermanentError, TransientError

__all__ = [
    "SOAP11_ENV",
    "SOAP12_ENV",
    "ErpBusinessFault",
    "ErpNoAnswer",
    "ErpRejected",
    "ErpUnavailable",
    "FaultClassifier",
    "QName",
    "SoapFault",
    "read_fault",
]

SOAP11_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


class ErpUnavailable(TransientError):
    """The ERP could not take the call now (outage, overload, timeout): retry later. Context
    ``in_doubt=True`` when the request may have reached the ERP (look it up before resending).
    """


class ErpNoAnswer(ErpUnavailable):
    """The ERP said 2xx but not what the call asked for: an empty body, another operation's
    response, or no document number where the sink requires one. Context ``missing`` names the
    element that was not there. The request may have taken effect, so the error is retried in
    doubt (``in_doubt=True``: the sink looks the document up before sending again)."""


class ErpRejected(PermanentError):
    """The ERP refused the request itself (Client/Sender fault, 4xx): retrying cannot help."""


class ErpBusinessFault(PermanentError):
    """The ERP refused the posting for a business reason (insufficient stock, blocked
    material): a Server/Receiver fault matched by a configured ``business`` rule."""


class QName(NamedTuple):
    """A fault code as the XML means it: namespace URI (None: no namespace, or a prefix the
    document never declared) and local name. ``str()`` gives ``{namespace}local``."""

    namespace: str | None
    local: str

    def __str__(self) -> str:
        return f"{{{self.namespace}}}{self.local}" if self.namespace else self.local


@dataclass(frozen=True)
class SoapFault:
    """A fault as sent: SOAP version, code (``Client``, ``Server.Deficit``, ``Sender``...) and
    1.2 subcodes as QNames, reason text and the detail's text content (flattened)."""

    version: Literal["1.1", "1.2"]
    code: QName
    subcodes: tuple[QName, ...]
    reason: str
    detail: str

    @property
    def kind(self) -> str:
        """``client``, ``server`` or ``other`` by the fault code's local name (its namespace is
        not checked: Axis 1, for one, writes ``ns1:Server.userException`` in its own)."""
        head = self.code.local.split(".", 1)[0]
        if head in ("Client", "Sender"):
            return "client"
        if head in ("Server", "Receiver"):
            return "server"
        return "other"

    def names(self) -> tuple[str, ...]:
        """The code and subcodes (local names) a rule's ``code`` is matched against."""
        return (self.code.local, *(s.local for s in self.subcodes))

    def qnames(self) -> tuple[QName, ...]:
        """The code and subcodes as QNames (a rule's ``qname`` is matched against these)."""
        return (self.code, *self.subcodes)


def _qname(element: etree._Element | None) -> QName:
    """The QName written as the text of ``element``, its prefix resolved against the
    namespaces in scope at that element (an unprefixed name takes the default namespace)."""
    text = "".join((element.text or "").split()) if element is not None else ""
    prefix, _, local = text.rpartition(":")
    namespace = element.nsmap.get(prefix or None) if element is not None else None
    return QName(namespace, local)


def _child(parent: etree._Element | None, name: str, env: str) -> etree._Element | None:
    """The first child ``name`` of ``parent``, qualified by the envelope namespace or not at
    all (SOAP 1.1 says unqualified; stacks writing the envelope as default namespace qualify
    it; some SOAP 1.2 stacks leave it unqualified)."""
    if parent is None:
        return None
    for child in parent:
        if isinstance(child.tag, str):
            tag = etree.QName(child)
            if tag.localname == name and tag.namespace in (None, env):
                return child
    return None


def _text(element: etree._Element | None) -> str:
    if element is None:
        return ""
    return " ".join(" ".join(element.itertext()).split())


def _reason(reason: etree._Element | None) -> str:
    """SOAP 1.2 Reason: the English Text if there is one, else the first."""
    texts = [] if reason is None else [
        c for c in reason if isinstance(c.tag, str) and etree.QName(c).localname == "Text"]
    english = [t for t in texts if (t.get(_XML_LANG) or "").lower().startswith("en")]
    chosen = english or texts
    return _text(chosen[0]) if chosen else ""


def read_fault(body: etree._Element) -> SoapFault | None:
    """The fault in a SOAP Body (1.1 or 1.2, by the Fault element's namespace), or None when
    the body holds no fault."""
    fault = body.find(f"{{{SOAP11_ENV}}}Fault")
    if fault is not None:
        return SoapFault("1.1", _qname(_child(fault, "faultcode", SOAP11_ENV)), (),
                         _text(_child(fault, "faultstring", SOAP11_ENV)),
                         _text(_child(fault, "detail", SOAP11_ENV)))
    fault = body.find(f"{{{SOAP12_ENV}}}Fault")
    if fault is None:
        return None
    env = SOAP12_ENV
    code = _child(fault, "Code", env)
    subcodes: list[QName] = []
    node = _child(code, "Subcode", env)
    while node is not None:
        subcodes.append(_qname(_child(node, "Value", env)))
        node = _child(node, "Subcode", env)
    return SoapFault("1.2", _qname(_child(code, "Value", env)), tuple(subcodes),
                     _reason(_child(fault, "Reason", env)), _text(_child(fault, "Detail", env)))


class _Rule:
    """A configured rule, its QName resolved once."""

    def __init__(self, rule: FaultRule, namespaces: dict[str, str]) -> None:
        self.rule = rule
        self.qname = QName(*resolve_qname(rule.qname, namespaces)) if rule.qname else None

    def matches(self, fault: SoapFault) -> bool:
        rule = self.rule
        if self.qname is not None and self.qname not in fault.qnames():
            return False
        if rule.code is not None and not any(re.fullmatch(rule.code, n) for n in fault.names()):
            return False
        if rule.string is not None and not re.search(rule.string, fault.reason):
            return False
        return rule.detail is None or re.search(rule.detail, fault.detail) is not None


class FaultClassifier:
    """Applies the decision table above to a fault (the config's rules first)."""

    def __init__(self, rules: FaultRules) -> None:
        self._business = [_Rule(r, rules.namespaces) for r in rules.business]
        self._transient = [_Rule(r, rules.namespaces) for r in rules.transient]

    def error(self, fault: SoapFault, *, operation: str, **context: object) -> BusError:
        """The error to raise for ``fault`` in ``operation`` (context: document number, ...)."""
        facts = {"operation": operation, "fault_code": ".".join(fault.names()),
                 "fault_qnames": [str(q) for q in fault.qnames()],
                 "fault_string": fault.reason[:500], "fault_detail": fault.detail[:500] or None,
                 "soap_version": fault.version, **context}
        subcodes = [s.local for s in fault.subcodes]
        said = f"{operation}: ERP fault {fault.code.local or '(no code)'}" + \
            (f" ({'/'.join(subcodes)})" if subcodes else "") + f": {fault.reason}"
        if any(rule.matches(fault) for rule in self._transient):
            return ErpUnavailable(said, decision="retry", **facts)
        if fault.kind == "server":
            if any(rule.matches(fault) for rule in self._business):
                return ErpBusinessFault(said, decision="dead_letter", **facts)
            return ErpUnavailable(said, decision="retry", **facts)
        return ErpRejected(said, decision="dead_letter", **facts)
