"""The fake ERP's SOAP layer: request bytes in, a :class:`Reply` out (the HTTP server sends it).

One request: parsed with the connector's hardened parser (a hostile request is a Client
fault), SOAP 1.1 or 1.2 recognised by the envelope namespace, the operation found by the body
element (document/literal in ``urn:retail:erp:types``, rpc/literal in ``urn:retail:erp:legacy``),
WS-Security UsernameToken checked when users are configured, the fault plan asked, the request
validated against the XSDs (document/literal), the operation run, the answer enveloped in the
request's SOAP version. Faults: 1.1 ``soap:Client`` / ``soap:Server[.Subcode]``, 1.2
``Sender`` / ``Receiver`` with an ``erp:`` subcode; the detail is an ``ErpError`` (Code,
Message, Field) in ``urn:retail:erp:common``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from connectors.soap_erp.fakeerp.hostile import HUGE_BYTES, hostile_body
from connectors.soap_erp.fakeerp.injection import FaultPlan, Injection
from connectors.soap_erp.fakeerp.operations import (
    DOC_OPERATIONS,
    LEGACY_NS,
    RPC_OPERATIONS,
    TYPES_NS,
)
from connectors.soap_erp.fakeerp.state import ErpFault, ErpState
from connectors.soap_erp.faults import SOAP11_ENV, SOAP12_ENV
from connectors.soap_erp.xmlsafe import SafeXml, XmlMalformedError, XmlSecurityError

__all__ = ["ErpService", "Reply"]

COMMON_NS = "urn:retail:erp:common"
_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
_WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
_HTML = (b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>"
         b"<h1>Bad Gateway</h1><p>The proxy server received an invalid response from an upstream "
         b"server (erp-app-03: connection refused).</p></body></html>")


@dataclass(frozen=True)
class Reply:
    """What the HTTP server does: answer ``status`` with ``body`` (chunked if an iterator),
    after waiting ``delay_after`` seconds; or close the connection (``drop``)."""

    status: int = 200
    body: bytes | Iterator[bytes] = b""
    content_type: str = "text/xml; charset=utf-8"
    drop: bool = False
    delay_after: float = 0.0
    declared_length: int | None = None
    content_encoding: str | None = None


class _Request:
    def __init__(self, version: str, operation: str, element: etree._Element, rpc: bool,
                 header: etree._Element | None) -> None:
        self.version, self.operation, self.element = version, operation, element
        self.rpc, self.header = rpc, header

    @property
    def env(self) -> str:
        return SOAP12_ENV if self.version == "1.2" else SOAP11_ENV


class ErpService:
    """SOAP over an :class:`ErpState`; ``wait(seconds)`` sleeps (the server's stop-aware wait).
    ``users``: WS-Security username -> password (none: no WS-Security required)."""

    def __init__(self, state: ErpState, plan: FaultPlan, *, wsdl_dir: Path,
                 users: dict[str, str] | None = None, wait: Callable[[float], object],
                 max_request: int = 4 * 1024 * 1024) -> None:
        self.state = state
        self.plan = plan
        self.users = users
        self._wait = wait
        self._xml = SafeXml(max_request)
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        self._schema = etree.XMLSchema(etree.parse(str(wsdl_dir / "erp-types.xsd"), parser))

    def handle(self, body: bytes) -> Reply:
        try:
            request = self._read(body)
        except ErpFault as fault:
            return self._fault(SOAP11_ENV, fault)
        self.state.record(request.operation, body)
        try:
            self._authenticate(request)
            rule = self.plan.pick(request.operation, body)
            if rule is not None and rule.mode not in ("slow", "timeout", "drop_after_commit"):
                return self._injected(rule, request)
            if rule is not None and rule.mode == "slow":
                self._wait(rule.delay / 1000)
            if not request.rpc and not self._schema.validate(request.element):
                error = self._schema.error_log.last_error
                raise ErpFault("client", "the request is not valid: "
                               f"{error.message if error else 'schema violation'}",
                               code="SCHEMA")
            handler = (RPC_OPERATIONS if request.rpc else DOC_OPERATIONS)[request.operation]
            answer = self._envelope(request.env, handler(self.state, request.element))
        except ErpFault as fault:
            return self._fault(request.env, fault)
        if rule is not None and rule.mode == "drop_after_commit":
            return Reply(drop=True)
        reply = Reply(body=answer, content_type=self._content_type(request.env))
        if rule is not None and rule.mode == "timeout":
            return Reply(body=answer, content_type=reply.content_type,
                         delay_after=rule.delay / 1000)
        return reply

    # -- reading ---------------------------------------------------------------------------------
    def _read(self, body: bytes) -> _Request:
        try:
            root = self._xml.parse(body, what="request")
        except (XmlSecurityError, XmlMalformedError) as exc:
            raise ErpFault("client", exc.message, code="XML") from None
        ns = etree.QName(root).namespace
        if etree.QName(root).localname != "Envelope" or ns not in (SOAP11_ENV, SOAP12_ENV):
            raise ErpFault("client", "not a SOAP 1.1 or 1.2 envelope", code="VERSION")
        version = "1.2" if ns == SOAP12_ENV else "1.1"
        soap_body = root.find(f"{{{ns}}}Body")
        element = soap_body[0] if soap_body is not None and len(soap_body) else None
        if element is None:
            raise ErpFault("client", "the SOAP body is empty", code="SCHEMA")
        name = etree.QName(element)
        rpc = name.namespace == LEGACY_NS and name.localname in RPC_OPERATIONS
        if not rpc and not (name.namespace == TYPES_NS and name.localname in DOC_OPERATIONS):
            raise ErpFault("client", f"unknown operation {name.text}", code="OPERATION")
        return _Request(version, name.localname, element, rpc, root.find(f"{{{ns}}}Header"))

    def _authenticate(self, request: _Request) -> None:
        if not self.users:
            return
        token = request.header.find(f"{{{_WSSE}}}Security/{{{_WSSE}}}UsernameToken") \
            if request.header is not None else None
        user = token.findtext(f"{{{_WSSE}}}Username") if token is not None else None
        password = token.find(f"{{{_WSSE}}}Password") if token is not None else None
        expected = self.users.get(user or "")
        if token is None or password is None or expected is None:
            raise ErpFault("auth", "the security token could not be authenticated",
                           code="wsse:FailedAuthentication")
        given = (password.text or "").strip()
        if password.get("Type", "").endswith("#PasswordDigest"):
            nonce = base64.b64decode(token.findtext(f"{{{_WSSE}}}Nonce") or "")
            created = (token.findtext(f"{{{_WSU}}}Created") or "").encode()
            given_ok = given == base64.b64encode(hashlib.sha1(
                nonce + created + expected.encode()).digest()).decode()
        else:
            given_ok = given == expected
        if not given_ok:
            raise ErpFault("auth", "the security token could not be authenticated",
                           code="wsse:FailedAuthentication")

    # -- answering --------------------------------------------------------------------------------
    @staticmethod
    def _content_type(env: str) -> str:
        return "application/soap+xml; charset=utf-8" if env == SOAP12_ENV \
            else "text/xml; charset=utf-8"

    @staticmethod
    def _envelope(env: str, content: etree._Element) -> bytes:
        root = etree.Element(f"{{{env}}}Envelope", nsmap={"soap": env})
        etree.SubElement(root, f"{{{env}}}Body").append(content)
        return bytes(etree.tostring(root, encoding="utf-8", xml_declaration=True))

    def _fault(self, env: str, fault: ErpFault) -> Reply:
        detail = etree.Element(f"{{{COMMON_NS}}}ErpError", nsmap={"erp": COMMON_NS})
        etree.SubElement(detail, f"{{{COMMON_NS}}}Code").text = fault.code
        etree.SubElement(detail, f"{{{COMMON_NS}}}Message").text = fault.message
        if fault.field:
            etree.SubElement(detail, f"{{{COMMON_NS}}}Field").text = fault.field
        e = f"{{{env}}}"
        node = etree.Element(f"{e}Fault", nsmap={"soap": env, "erp": COMMON_NS,
                                                  "wsse": _WSSE})
        if env == SOAP11_ENV:
            code = fault.code if fault.kind == "auth" else \
                ("soap:Client" if fault.kind == "client" else "soap:Server") + \
                (f".{fault.subcode}" if fault.subcode else "")
            etree.SubElement(node, "faultcode").text = code
            etree.SubElement(node, "faultstring").text = fault.message
            etree.SubElement(node, "detail").append(detail)
        else:
            code_node = etree.SubElement(node, f"{e}Code")
            etree.SubElement(code_node, f"{e}Value").text = \
                "soap:Sender" if fault.kind in ("client", "auth") else "soap:Receiver"
            if fault.subcode or fault.kind == "auth":
                sub = etree.SubElement(code_node, f"{e}Subcode")
                etree.SubElement(sub, f"{e}Value").text = \
                    fault.code if fault.kind == "auth" else f"erp:{fault.subcode}"
            reason = etree.SubElement(node, f"{e}Reason")
            text = etree.SubElement(reason, f"{e}Text")
            text.text = fault.message
            text.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
            etree.SubElement(node, f"{e}Detail").append(detail)
        return Reply(status=500, body=self._envelope(env, node),
                     content_type=self._content_type(env))

    def _injected(self, rule: Injection, request: _Request) -> Reply:
        if rule.mode == "drop":
            return Reply(drop=True)
        if rule.mode == "http_500":
            return Reply(status=500, body=b"Internal Server Error",
                         content_type="text/plain; charset=utf-8")
        if rule.mode == "html":
            return Reply(status=502, body=_HTML, content_type="text/html; charset=utf-8")
        if rule.mode == "server_fault":
            return self._fault(request.env, ErpFault(
                "server", "Database unavailable: lock wait timeout exceeded", code="DB-1205"))
        if rule.mode == "client_fault":
            return self._fault(request.env, ErpFault(
                "client", "Session invalid for this client", code="SESSION"))
        if rule.mode == "business_fault":
            return self._fault(request.env, ErpFault("server", rule.string, code=rule.code,
                                                     subcode=rule.subcode))
        if rule.mode == "canned":
            return Reply(status=rule.status, body=(rule.body or "").encode(),
                         content_type=self._content_type(request.env))
        assert rule.mode == "hostile" and rule.payload is not None
        return Reply(body=hostile_body(rule.payload, rule.target),
                     declared_length=HUGE_BYTES if rule.payload == "huge_declared" else None,
                     content_encoding="gzip" if rule.payload == "gzip_bomb" else None)
