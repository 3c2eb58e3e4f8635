"""The SOAP client: zeep builds and reads messages, httpx carries them, errors come out typed.

This module is the boundary where httpx, lxml and zeep exceptions become bus errors. One
:meth:`SoapClient.call`:

1. builds the request envelope with zeep from a plain dict (WS-Security header included);
   a request that does not fit the WSDL is a PermanentError naming operation and field;
2. asks the endpoint's circuit breaker (open: CircuitOpen, nothing is sent);
3. POSTs it (``http_transport``: explicit connect and operation timeouts, TLS, at most
   ``max_response`` bytes read before the operation deadline);
4. parses the answer with the hardened parser (zeep never sees raw bytes) and applies the fault
   table (``faults``): a result is returned as a plain dict; otherwise ErpUnavailable (retry;
   ``in_doubt=True`` when the request may have been processed), ErpRejected /
   ErpBusinessFault (dead letter) or XmlSecurityError (dead letter);
5. tells the breaker: a retryable failure counts, any real answer from the ERP resets it.

Thread-safe: one client may serve several threads (``concurrency`` in the sink).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zeep
import zeep.exceptions
import zeep.helpers
from lxml import etree
from zeep.wsse.username import UsernameToken

from connectors.soap_erp.breaker import CircuitBreaker
from connectors.soap_erp.config import EndpointConfig
from connectors.soap_erp.elements import unknown_parameter_hint
from connectors.soap_erp.faults import (
    SOAP11_ENV,
    SOAP12_ENV,
    ErpNoAnswer,
    ErpRejected,
    ErpUnavailable,
    FaultClassifier,
    read_fault,
)
from connectors.soap_erp.http_transport import endpoint_client, post
from connectors.soap_erp.metrics import SoapMetrics
from connectors.soap_erp.payload import to_plain
from connectors.soap_erp.wsdl import LocalFiles, check_literal, zeep_settings
from connectors.soap_erp.xmlsafe import SafeXml, XmlMalformedError, XmlSecurityError, excerpt
from integration_bus.connector import (
    BusError,
    ConfigError,
    PermanentError,
    did_you_mean,
    redact_url,
)

__all__ = ["Operation", "SoapClient"]

_XML_TYPES = ("text/xml", "application/soap+xml", "application/xml")


@dataclass(frozen=True)
class Operation:
    """One operation of the bound port: what the call needs besides the payload."""

    name: str
    soap_action: str | None
    soap12: bool
    inputs: tuple[str, ...]  # parameter names (elements under the request wrapper / parts)
    outputs: tuple[str, ...]  # element names directly under the response wrapper
    binding_op: Any  # zeep's BindingOperation (process_reply)


def _children(message: Any) -> tuple[str, ...]:
    """Names of the elements directly under a message's body wrapper (or its rpc parts)."""
    wrapper = getattr(message, "body", None) if message is not None else None
    return tuple(name for name, _ in wrapper.type.elements) if wrapper is not None else ()


def _answer_names(op: Operation) -> tuple[str, ...] | None:
    """The names the response wrapper of ``op`` may have (``{ns}local`` for document style,
    local names for rpc, whose wrapper name the WSDL leaves open: WS-I says ``<op>Response``,
    zeep calls it after the message); None for a one-way operation."""
    output = op.binding_op.output
    body = getattr(output, "body", None) if output is not None else None
    qname = getattr(body, "qname", None)
    if qname is None:
        return None
    if type(output).__name__ == "RpcMessage":
        return (f"{op.name}Response", etree.QName(qname).localname)
    return (str(qname),)


def _expected(op: Operation) -> str:
    names = _answer_names(op) or ("(none)",)
    return etree.QName(names[0]).localname


def _check_answer(op: Operation, body: etree._Element, status: int,
                  context: dict[str, Any]) -> None:
    """A 200 counts only when its Body holds ``op``'s response element: an empty Body, or
    another operation's response, is ErpNoAnswer (in doubt: the request may have been done)."""
    names = _answer_names(op)
    if names is None:
        return
    first = next((child for child in body if isinstance(child.tag, str)), None)
    if first is not None:
        tag = etree.QName(first)
        if (str(tag) if len(names) == 1 else tag.localname) in names:
            return
    found = f"a {etree.QName(first).localname} element" if first is not None else "an empty Body"
    raise ErpNoAnswer(f"{op.name}: HTTP {status} with {found} instead of the "
                      f"{_expected(op)} element (the call may have taken effect)",
                      missing=_expected(op), found=None if first is None else
                      etree.QName(first).text, in_doubt=True, status=status,
                      outcome="no_answer", **context)


class SoapClient:
    """Calls operations of one port of one WSDL at one address. ``close()`` is idempotent."""

    def __init__(self, config: EndpointConfig, *, document: Any,
                 breaker: Callable[[str], CircuitBreaker], metrics: SoapMetrics,
                 resolve: Callable[[str], Path], pool_size: int = 4) -> None:
        self._config = config
        self._metrics = metrics
        self._faults = FaultClassifier(config.faults)
        self._xml = SafeXml(config.max_response, config.max_nodes)
        wsse = None
        if config.ws_security is not None:
            wsse = UsernameToken(  # type: ignore[no-untyped-call]
                config.ws_security.username, config.ws_security.password.get_secret_value(),
                use_digest=config.ws_security.digest)
        self._zeep = zeep.Client(  # type: ignore[no-untyped-call]
            document, wsse=wsse, settings=zeep_settings(),
            transport=LocalFiles(Path(document.location).parent, self._xml))
        service, port = self._port(document)
        self.address: str = config.address or port.binding_options.get("address") or ""
        if not self.address.startswith(("http://", "https://")):
            raise ConfigError("the port has no http(s) soap:address: set 'address'",
                              field="address")
        #: the address as shown (errors, breaker, metrics labels): no password of its user-info
        self.endpoint = redact_url(self.address)
        self.breaker = breaker(self.endpoint)
        self._binding = port.binding
        self._proxy = self._zeep.create_service(  # type: ignore[no-untyped-call]
            port.binding.name, self.address)
        self.port = f"{service.name}/{port.name}"
        self._http = endpoint_client(config, resolve, pool_size)
        self._closed = False

    def _port(self, document: Any) -> tuple[Any, Any]:
        services = document.services
        name = self._config.service or (next(iter(services)) if len(services) == 1 else None)
        if name not in services:
            raise ConfigError(f"service {name!r} is not in the WSDL" if name else
                              "the WSDL has several services: name one", field="service",
                              hint=did_you_mean(name or "", services))
        service = services[name]
        port_name = self._config.port or (next(iter(service.ports))
                                          if len(service.ports) == 1 else None)
        if port_name not in service.ports:
            raise ConfigError(f"port {port_name!r} is not in service {name}" if port_name else
                              f"service {name} has several ports: name one", field="port",
                              hint=did_you_mean(port_name or "", service.ports))
        return service, service.ports[port_name]

    def operation(self, name: str, field: str = "operation") -> Operation:
        """The operation ``name`` of the bound port; ConfigError (did-you-mean) if absent."""
        ops = self._binding.all()
        if name not in ops:
            raise ConfigError(f"operation {name!r} is not offered by port {self.port}",
                              field=field, hint=did_you_mean(name, ops))
        check_literal(self._zeep.wsdl, self._binding, name, port=self.port, field=field)
        op = ops[name]
        return Operation(name, op.soapaction, "12" in type(self._binding).__name__,
                         _children(op.input), _children(op.output), op)

    # -- one call --------------------------------------------------------------------------------
    def call(self, op: Operation, payload: Any, **where: Any) -> dict[str, Any]:
        """Call ``op`` with ``payload`` (a dict of the operation's parameters); the answer as a
        plain dict (element name -> value). Raises as described in the module docstring;
        every error names the operation and ``where`` (document number, envelope id...)."""
        context = {"operation": op.name, "endpoint": self.endpoint, **where}
        body = self._envelope(op, payload, context)
        probe = self.breaker.admit(context)
        started = time.perf_counter()
        outcome = "ok"
        try:
            result = self._exchange(op, body, context)
        except BusError as exc:
            outcome = str(exc.context.get("outcome", type(exc).__name__))
            if isinstance(exc, ErpUnavailable):
                self.breaker.failed()
            else:
                self.breaker.succeeded()  # the ERP answered: it is up
            if probe:
                exc.with_context(probe=True)
            raise
        except BaseException:
            self.breaker.failed()
            raise
        else:
            self.breaker.succeeded()
            return result
        finally:
            self._metrics.calls.labels(self.endpoint, op.name, outcome).inc()
            self._metrics.seconds.labels(self.endpoint, op.name).observe(
                time.perf_counter() - started)

    def _envelope(self, op: Operation, payload: Any, context: dict[str, Any]) -> bytes:
        if not isinstance(payload, dict):
            raise PermanentError(f"{op.name}: the request must be an object of parameters, not "
                                 f"{type(payload).__name__}", **context)
        try:
            envelope = self._zeep.create_message(  # type: ignore[no-untyped-call]
                self._proxy, op.name, **payload)
        except TypeError as exc:
            text = str(exc)
            field = text.split("'")[1] if "unexpected keyword argument '" in text else None
            raise PermanentError(f"{op.name}: the request does not fit the WSDL: "
                                 f"{text.split('. Signature')[0]}", field=field,
                                 hint=unknown_parameter_hint(op.binding_op.input, field)
                                 if field else None, **context) from None
        except zeep.exceptions.ValidationError as exc:
            path = ".".join(str(p) for p in (exc.path or []))
            raise PermanentError(f"{op.name}: the request does not fit the WSDL: {exc.message}",
                                 field=path or None, **context) from None
        except (zeep.exceptions.Error, ValueError, ArithmeticError) as exc:
            raise PermanentError(f"{op.name}: a request value does not fit the WSDL: {exc}",
                                 **context) from None
        return bytes(etree.tostring(envelope, encoding="utf-8", xml_declaration=True))

    def _headers(self, op: Operation) -> dict[str, str]:
        action = op.soap_action or ""
        if op.soap12:
            kind = "application/soap+xml; charset=utf-8"
            return {"Content-Type": kind + (f'; action="{action}"' if action else "")}
        return {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{action}"'}

    def _exchange(self, op: Operation, body: bytes, context: dict[str, Any]) -> dict[str, Any]:
        status, media, data = post(self._http, self.address, body, self._headers(op),
                                   config=self._config, context=context)
        return self._judge(op, status, media, data, context)

    def _judge(self, op: Operation, status: int, media: str, data: bytes,
               context: dict[str, Any]) -> dict[str, Any]:
        if status in (401, 403, 407):
            raise ErpRejected(f"{op.name}: HTTP {status}: the ERP refused the credentials",
                              status=status, outcome="http_error", **context)
        if not data and 200 <= status < 300:
            if _answer_names(op) is None:  # a one-way operation: nothing comes back
                return {}
            raise ErpNoAnswer(f"{op.name}: HTTP {status} with an empty body: the answer has "
                              f"no {_expected(op)} element (the call may have taken effect)",
                              missing=_expected(op), in_doubt=True, status=status,
                              outcome="no_answer", **context)
        if media not in _XML_TYPES:
            raise ErpUnavailable(f"{op.name}: HTTP {status} with a {media or 'untyped'} page "
                                 f"instead of SOAP: {excerpt(data)}", status=status,
                                 outcome="html_page", excerpt=excerpt(data), **context)
        try:
            root = self._xml.parse(data, what=f"response to {op.name}", **context)
        except XmlSecurityError as exc:
            exc.with_context(outcome="refused_xml", status=status)
            raise
        except XmlMalformedError as exc:
            raise ErpUnavailable(f"{op.name}: HTTP {status} with broken XML: "
                                 f"{exc.context.get('excerpt')}", status=status,
                                 outcome="http_error", **context) from None
        body = root.find(f"{{{SOAP12_ENV if op.soap12 else SOAP11_ENV}}}Body")
        fault = read_fault(body) if body is not None else None
        if fault is not None:
            error = self._faults.error(fault, status=status, **context)
            error.with_context(outcome=f"fault_{fault.kind}" if fault.kind != "server" else
                               "fault_business" if error.context.get("decision") ==
                               "dead_letter" else "fault_server")
            raise error
        if body is None or status != 200:
            kind = ErpUnavailable if status >= 500 or body is None else ErpRejected
            missing = "body" if body is None else "fault"
            raise kind(f"{op.name}: HTTP {status} without a SOAP {missing}: {excerpt(data)}",
                       status=status, outcome="http_error", **context)
        _check_answer(op, body, status, context)
        return self._result(op, root, context)

    def _result(self, op: Operation, root: etree._Element,
                context: dict[str, Any]) -> dict[str, Any]:
        try:
            value = op.binding_op.process_reply(root)
        except (zeep.exceptions.Error, ValueError, TypeError, AttributeError) as exc:
            raise ErpRejected(f"{op.name}: the answer does not match the WSDL (the call may "
                              f"have taken effect): {exc}", outcome="http_error",
                              **context) from None
        plain = to_plain(zeep.helpers.serialize_object(  # type: ignore[no-untyped-call]
            value, dict))
        if len(op.outputs) == 1:  # zeep unwraps a single child: put its name back
            return {op.outputs[0]: plain}
        return plain if isinstance(plain, dict) else {}

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._http.close()
