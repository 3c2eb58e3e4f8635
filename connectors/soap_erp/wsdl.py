"""Loading a WSDL shipped with the config into zeep, without zeep ever reading raw bytes.

zeep parses the WSDL and every imported XSD with its own lxml parser. Here it gets them through
:class:`LocalFiles`, a zeep transport that

- reads **local files only**, inside the WSDL's own directory (an ``http(s)://`` import, or a
  path leading elsewhere, is a ConfigError naming the file: the ERP is never asked for its WSDL);
- parses each one with the hardened parser first (:class:`~connectors.soap_erp.xmlsafe.SafeXml`:
  a DOCTYPE, an entity, an oversized file are refused) and hands zeep the re-serialised tree,
  which by construction has no DTD and no entity references left.

zeep's own settings forbid DTDs and entities as a second line.

Well-known namespaces that WSDLs import by their URL — SOAP 1.1 encoding (every rpc/encoded
WSDL, e.g. Magento 1's), the WSDL namespace, the XML namespace (``xml:lang``) — are answered
from schemas shipped with the connector (``known/``), never fetched.

While loading, the binding style of every operation is read from the WSDL files
(``document/literal``, ``rpc/literal``, ``rpc/encoded``...): zeep would send an encoded
operation as a literal body without a word, so :func:`check_literal` refuses such an operation
by name when a sink or source is configured with it (the rest of the WSDL stays usable).

Documents are cached per (path, modification time): every sink and worker of a process shares
one parsed WSDL (zeep documents are read-only once loaded).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import zeep
import zeep.exceptions
from lxml import etree
from zeep.transports import Transport
from zeep.wsdl import Document

from connectors.soap_erp.xmlsafe import SafeXml, XmlMalformedError, XmlSecurityError
from integration_bus.connector import ConfigError, PermanentError

__all__ = ["KNOWN_SCHEMAS", "LocalFiles", "WsdlCache", "check_literal", "operation_style",
           "zeep_settings"]

_MAX_WSDL_FILE = 8 * 1024 * 1024
_WSDL = "http://schemas.xmlsoap.org/wsdl/"
_SOAP_BINDINGS = ("http://schemas.xmlsoap.org/wsdl/soap/", "http://schemas.xmlsoap.org/wsdl/soap12/")
_STYLES = "_integration_bus_styles"  # attribute set on a loaded zeep Document

KNOWN_SCHEMAS = {
    "http://schemas.xmlsoap.org/soap/encoding": "soap-encoding.xsd",
    "http://schemas.xmlsoap.org/wsdl": "wsdl.xsd",
    "http://www.w3.org/2001/xml.xsd": "xml.xsd",
    "https://www.w3.org/2001/xml.xsd": "xml.xsd",
}
"""Namespace URLs (as WSDLs import them, without a trailing slash) -> the connector's own copy."""


def zeep_settings() -> zeep.Settings:
    """zeep's parser settings: strict, no huge trees, no DTD, no entities. Every document zeep
    loads goes through :class:`LocalFiles`, which refuses any remote URL but the known schemas;
    zeep's own ``forbid_external`` is off because it would refuse those before asking."""
    return zeep.Settings(strict=True, xml_huge_tree=False, forbid_dtd=True,
                         forbid_entities=True, forbid_external=False)


class LocalFiles(Transport):
    """A zeep transport for loading only: local files under ``root``, pre-parsed safely."""

    def __init__(self, root: Path, xml: SafeXml) -> None:
        # Transport.__init__ would open a requests.Session this transport never uses.
        self.cache = None
        self.load_timeout = 0
        self.operation_timeout = 0
        self.session = None
        self._close_session = False  # read by Transport.__del__
        self._root = root.resolve()
        self._xml = xml
        self.styles: dict[tuple[str, str], str] = {}  # (binding {ns}name, operation) -> style

    def load(self, url: str) -> bytes:
        known = KNOWN_SCHEMAS.get(url.rstrip("/"))
        if known is not None:
            return resources.files("connectors.soap_erp").joinpath("known", known).read_bytes()
        parsed = urlparse(url)
        if parsed.scheme not in ("", "file") and len(parsed.scheme) > 1:  # 1: a drive letter
            raise ConfigError(f"the WSDL refers to {url}: remote documents are never fetched",
                              file=str(self._root), hint="download it once and ship it beside "
                                                         "the WSDL, with a relative location")
        path = Path(unquote(parsed.path) if parsed.scheme == "file" else url).resolve()
        if not path.is_relative_to(self._root):
            raise ConfigError(f"the WSDL imports {path}, outside its directory",
                              file=str(self._root), hint="keep the WSDL and its XSDs together")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}", file=str(path)) from None
        if len(data) > _MAX_WSDL_FILE:
            raise ConfigError(f"{len(data):,} bytes is too large for a WSDL/XSD file",
                              file=str(path))
        try:
            root = self._xml.parse(data, what=f"WSDL file {path.name}")
        except (XmlSecurityError, XmlMalformedError) as exc:
            raise ConfigError(exc.message, file=str(path), line=exc.context.get("line")) \
                from exc
        if root.tag == f"{{{_WSDL}}}definitions":
            self.styles.update(_binding_styles(root))
        return bytes(etree.tostring(root, encoding="utf-8", xml_declaration=True))

    def close(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True)
class _Key:
    path: Path
    mtime_ns: int


class WsdlCache:
    """Parsed WSDL documents by (path, mtime); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._documents: dict[_Key, Document] = {}

    def load(self, path: Path) -> Document:
        """The zeep Document of the WSDL at ``path``. Raises ConfigError naming the file."""
        try:
            key = _Key(path.resolve(), path.stat().st_mtime_ns)
        except OSError as exc:
            raise ConfigError(f"WSDL not found: {exc.strerror}", file=str(path),
                              field="wsdl") from None
        with self._lock:
            found = self._documents.get(key)
            if found is not None:
                return found
            transport = LocalFiles(key.path.parent, SafeXml(_MAX_WSDL_FILE))
            try:
                # zeep annotates ``transport`` as a class; it takes (and needs) an instance
                document = Document(str(key.path), transport,  # type: ignore[arg-type]
                                    settings=zeep_settings())
            except (ConfigError, PermanentError):
                raise
            except zeep.exceptions.ExternalReferenceForbidden as exc:
                raise ConfigError(f"the WSDL refers to {exc.url}: remote documents are never "
                                  "fetched", file=str(path), field="wsdl",
                                  hint="download it once and ship it beside the WSDL, with a "
                                       "relative location") from exc
            except (zeep.exceptions.Error, etree.LxmlError, ValueError, KeyError) as exc:
                raise ConfigError(f"the WSDL cannot be used: {type(exc).__name__}: {exc}",
                                  file=str(path), field="wsdl") from exc
            setattr(document, _STYLES, transport.styles)
            self._documents[key] = document
            return document


def _binding_styles(root: etree._Element) -> dict[tuple[str, str], str]:
    """``style/use`` of each operation of each SOAP binding in one WSDL document."""
    target = root.get("targetNamespace") or ""
    found: dict[tuple[str, str], str] = {}
    for binding in root.iterfind(f"{{{_WSDL}}}binding"):
        for soap in _SOAP_BINDINGS:
            soap_binding = binding.find(f"{{{soap}}}binding")
            if soap_binding is not None:
                break
        else:
            continue
        default = soap_binding.get("style") or "document"
        for operation in binding.iterfind(f"{{{_WSDL}}}operation"):
            soap_operation = operation.find(f"{{{soap}}}operation")
            style = (soap_operation.get("style") if soap_operation is not None else None) \
                or default
            uses = {body.get("use") or "literal"
                    for direction in ("input", "output")
                    for body in operation.iterfind(f"{{{_WSDL}}}{direction}/{{{soap}}}body")}
            use = "encoded" if "encoded" in uses else "literal"
            name = f"{{{target}}}{binding.get('name')}"
            found[(name, operation.get("name") or "")] = f"{style}/{use}"
    return found


def operation_style(document: Any, binding: Any, operation: str) -> str | None:
    """``document/literal``, ``rpc/literal``, ``rpc/encoded``... of ``operation`` in
    ``binding`` (zeep objects), as the WSDL says; None when not known (not loaded by
    :class:`WsdlCache`)."""
    styles: dict[tuple[str, str], str] = getattr(document, _STYLES, {})
    return styles.get((str(binding.name), operation))


def check_literal(document: Any, binding: Any, operation: str, *, port: str,
                  field: str) -> None:
    """ConfigError when ``operation`` is SOAP-encoded: the bus sends literal bodies only and
    never sends an encoded operation as if it were literal."""
    style = operation_style(document, binding, operation)
    if style is not None and style.endswith("/encoded"):
        raise ConfigError(f"operation {operation!r} of port {port} is {style} (SOAP section 5 "
                          "encoding, xsi:type, SOAP-ENC arrays): the bus sends literal XML "
                          "only and will not send it as literal", field=field,
                          hint="use a port of the service whose binding is document/literal "
                               "or rpc/literal; the WSDL's literal operations work as they are")
