"""The ``soap_erp`` connector's config models: the spec behind validation, ``bus lint`` and the
generated JSON Schema.

An endpoint (shared by sink and source) names a WSDL **shipped with the config** (a path; the
connector never fetches one), the service and port in it, the address to call, auth (HTTP basic,
WS-Security UsernameToken), TLS, explicit timeouts, a response size cap, the circuit breaker and
the fault classification table. A sink instance calls one ``operation``; a source instance polls
one operation with a cursor. Secrets are ``SecretStr``: never printed, never logged.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors.soap_erp.xmlsafe import DEFAULT_MAX_NODES
from integration_bus.connector import BusError, Millis, check_type, did_you_mean

__all__ = [
    "BasicAuthConfig",
    "BreakerConfig",
    "DocumentNumberConfig",
    "EndpointConfig",
    "FaultRule",
    "FaultRules",
    "LookupConfig",
    "PollConfig",
    "ReplyConfig",
    "SoapErpSinkConfig",
    "SoapErpSourceConfig",
    "StockQueryConfig",
    "Timeouts",
    "TlsConfig",
    "WsSecurityConfig",
    "resolve_qname",
]

_PATH = r"^[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*$"  # a dotted path into a request / response


def _message_type(value: str) -> str:
    try:
        return check_type(value)
    except BusError as exc:  # pydantic reports ValueErrors with the line of the field
        raise ValueError(f"{exc.message} ({exc.context.get('hint')})") from None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Model):
    """Nothing waits forever on the ERP."""

    connect: Millis = Field(5_000, description="TCP + TLS connect")
    operation: Millis = Field(30_000, description="the whole call: send, the ERP's work, read "
                                                  "the answer (a deadline, not per read)")


class TlsConfig(_Model):
    """Certificate checks for ``https://`` addresses (on by default; files are PEM)."""

    verify: bool = Field(True, description="verify the ERP's certificate chain and host name")
    ca_file: str | None = Field(None, description="CA bundle to trust instead of the system's")
    client_cert: str | None = Field(None, description="client certificate (mutual TLS)")
    client_key: str | None = Field(None, description="its private key (if not in client_cert)")


class BasicAuthConfig(_Model):
    username: str = Field(min_length=1)
    password: SecretStr


class WsSecurityConfig(_Model):
    """WS-Security UsernameToken in the SOAP header."""

    username: str = Field(min_length=1)
    password: SecretStr
    digest: bool = Field(False, description="PasswordDigest (nonce + created) instead of text")


class BreakerConfig(_Model):
    """Circuit breaker per endpoint address, shared by every sink and source of a process."""

    failures: int = Field(5, ge=1, le=1000,
                          description="consecutive retryable failures that open the circuit")
    open_for: Millis = Field(30_000, description="how long it stays open before one probe")


_QNAME = re.compile(r"^(?:\{(?P<ns>[^{}]*)\}|(?P<prefix>[A-Za-z_][\w.-]*):)?"
                    r"(?P<local>[A-Za-z_][\w.-]*)$")


def resolve_qname(text: str, namespaces: dict[str, str]) -> tuple[str | None, str]:
    """``{namespace}local`` or ``prefix:local`` (prefix from ``namespaces``) as (namespace,
    local); ``{}local`` is a code without namespace. Raises ValueError saying what to write."""
    match = _QNAME.match(text)
    if match is None or (match["ns"] is None and match["prefix"] is None):
        raise ValueError(f"{text!r} is not a qualified name: write '{{namespace}}local' or "
                         "'prefix:local' with the prefix declared in faults.namespaces "
                         "('{}local' for a code without namespace)")
    if match["prefix"] is not None:
        namespace = namespaces.get(match["prefix"])
        if namespace is None:
            near = did_you_mean(match["prefix"], namespaces)
            raise ValueError(f"prefix {match['prefix']!r} of {text!r} is not declared in "
                             "faults.namespaces" + (f" ({near})" if near else ""))
        return namespace, match["local"]
    return match["ns"] or None, match["local"]


class FaultRule(_Model):
    """Matches a SOAP fault: every given part must match."""

    qname: str | None = Field(None, description="the fault code or a 1.2 subcode is exactly "
                                                "this QName: '{namespace}local' or "
                                                "'prefix:local' (prefix declared in "
                                                "faults.namespaces)")
    code: str | None = Field(None, description="regular expression, full match against the "
                                               "fault code or a 1.2 subcode (local names, "
                                               "e.g. 'Server.Deficit')")
    string: str | None = Field(None, description="regular expression searched in faultstring "
                                                 "/ Reason text")
    detail: str | None = Field(None, description="regular expression searched in the "
                                                 "detail's text")

    @model_validator(mode="after")
    def _usable(self) -> FaultRule:
        given = [p for p in (self.code, self.string, self.detail) if p is not None]
        if not given and self.qname is None:
            raise ValueError("a fault rule needs at least one of qname, code, string, detail")
        for pattern in given:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return self


class FaultRules(_Model):
    """Site-specific rows of the fault table (see ``faults``)."""

    namespaces: dict[str, str] = Field(
        default_factory=dict, description="prefixes for the rules' qnames (prefix: namespace "
                                          "URI); a fault's own prefixes are resolved in the "
                                          "fault, so they need not match these")
    business: list[FaultRule] = Field(
        default_factory=list, description="Server/Receiver faults that are business errors: "
                                          "dead-lettered at once, never retried")
    transient: list[FaultRule] = Field(
        default_factory=list, description="faults to retry whatever their code (e.g. a "
                                          "record lock reported as a Client fault)")

    @model_validator(mode="after")
    def _qnames_resolve(self) -> FaultRules:
        for rule in (*self.business, *self.transient):
            if rule.qname is not None:
                resolve_qname(rule.qname, self.namespaces)
        return self


class StockQueryConfig(_Model):
    """How ``bus reconcile`` reads stock from this ERP (the StockReader capability): one
    ``operation`` call per material and plant (``Material``, ``Plant`` in; ``Stock`` rows with
    ``StorageLocation``, ``OnHand``, ``Reserved``, ``Available`` out). Tables are read only
    when stock is read, so an instance that never reconciles needs none of them."""

    operation: str = Field("QueryStock", min_length=1)
    locations: str = Field("location", description="xref table (mappings/xref/NAME.csv) keyed "
                                                   "by the bus's location codes")
    plant_column: str = Field("erp_plant", description="its column holding the ERP plant")
    storage_location_column: str = Field("storage_location", description="its column holding "
                                                                         "the storage location")
    skus: str | None = Field(None, description="xref table from the bus's SKUs to ERP material "
                                               "numbers (first value column); none: the same")


class EndpointConfig(_Model):
    """One SOAP endpoint: the WSDL shipped with the config and how to call it."""

    wsdl: str = Field(description="path of the WSDL (relative: to the project dir); its "
                                  "imports must be local files beside it")
    service: str | None = Field(None, description="service name (needed if the WSDL has "
                                                  "several)")
    port: str | None = Field(None, description="port name (needed if the service has several)")
    address: str | None = Field(None, pattern=r"^https?://",
                                description="URL to call; default: the port's soap:address")
    basic_auth: BasicAuthConfig | None = None
    ws_security: WsSecurityConfig | None = None
    tls: TlsConfig = Field(default_factory=TlsConfig)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    max_response: int = Field(10 * 1024 * 1024, ge=4096, le=512 * 1024 * 1024,
                              description="largest response body read, in bytes")
    max_nodes: int = Field(DEFAULT_MAX_NODES, ge=1000, le=10_000_000,
                           description="most XML elements + attributes in one answer "
                                       "(a parsed tree costs 100-200 bytes per node)")
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    faults: FaultRules = Field(default_factory=FaultRules)
    stock: StockQueryConfig = Field(default_factory=StockQueryConfig)


class DocumentNumberConfig(_Model):
    """The external document number: ``prefix`` + base32 of SHA-256(idempotency key), cut to
    ``length`` characters. The same envelope always gets the same number, so the ERP (and the
    lookup) can tell a repeat."""

    field: str = Field("DocumentHeader.ExternalReference", pattern=_PATH,
                       description="where in the request the number is put (dotted path)")
    prefix: str = Field("IB", pattern=r"^[A-Z0-9-]{0,10}$")
    length: int = Field(26, ge=16, le=64, description="total length including the prefix")
    answer: str | None = Field(None, pattern=_PATH,
                               description="response path of the ERP's own document number "
                                           "(e.g. DocumentNumber): an answer without it is "
                                           "not counted as delivered (ErpNoAnswer: retried, "
                                           "looked up first)")


class LookupConfig(_Model):
    """How to ask the ERP whether a document with our number exists."""

    operation: str = "FindDocument"
    reference: str = Field("ExternalReference", pattern=_PATH,
                           description="request field taking the document number")
    found: str = Field("Document.DocumentNumber", pattern=_PATH,
                       description="response path that is non-empty when the document exists")


class ReplyConfig(_Model):
    """Request/reply: publish the ERP's answer as a new envelope (derived from the request)."""

    type: str = Field(description="type of the envelope carrying the response")
    mapping: str | None = Field(None, description="mapping file run on that envelope; its "
                                                  "outputs are published instead")

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        return _message_type(value)


class SoapErpSinkConfig(EndpointConfig):
    """Calls ``operation`` once per envelope. ``document_number`` and ``lookup`` are required
    keys (write ``null`` for read-only operations): a posting must say how it stays single."""

    operation: str = Field(min_length=1)
    request_mapping: str | None = Field(None, description="mapping file from the envelope to "
                                                          "the request (default: the payload)")
    document_number: DocumentNumberConfig | None
    lookup: LookupConfig | None
    reply: ReplyConfig | None = None
    concurrency: int = Field(4, ge=1, le=64, description="calls in flight per sink instance "
                                                         "(a worker batch is sent in parallel)")

    @model_validator(mode="after")
    def _lookup_needs_number(self) -> SoapErpSinkConfig:
        if self.lookup is not None and self.document_number is None:
            raise ValueError("'lookup' finds documents by their number: set 'document_number'")
        return self


class PollConfig(_Model):
    """One ERP operation polled with a cursor (defaults: the fake ERP's GetStockChanges)."""

    operation: str = "GetStockChanges"
    cursor_param: str = Field("SinceSequence", pattern=_PATH)
    start: str = Field("0", description="cursor value of the very first poll")
    page_size_param: str | None = Field("MaxRows", pattern=_PATH)
    page_size: int = Field(100, ge=1, le=10_000)
    items: str = Field("Change", pattern=_PATH, description="response path of the item list")
    position: str = Field("Sequence", pattern=_PATH,
                          description="item field holding its (increasing) cursor position")
    more: str | None = Field("HasMore", pattern=_PATH,
                             description="response path that is true when more pages wait")
    type: str = Field("erp.stock.changed", description="type of the envelopes")
    max_pages: int = Field(20, ge=1, le=10_000, description="pages fetched per poll at most")
    interval: Millis = 60_000

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        return _message_type(value)


class SoapErpSourceConfig(EndpointConfig):
    """A polling source: ``poll`` says which operation and how its cursor works."""

    poll: PollConfig = Field(default_factory=PollConfig)
