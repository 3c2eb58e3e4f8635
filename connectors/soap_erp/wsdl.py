"""Loading a WSDL shipped with the config into zeep, without zeep ever reading raw bytes.

zeep parses the WSDL and every imported XSD with its own lxml parser. Here it gets them through
:class:`LocalFiles`, a zeep transport that

- reads **local files only**, inside the WSDL's own directory (an ``http(s)://`` import, or a
  path leading elsewhere, is a ConfigError naming the file: the ERP is never asked for its WSDL);
- parses each one with the hardened parser first (:class:`~connectors.soap_erp.xmlsafe.SafeXml`:
  a DOCTYPE, an entity, an oversized file are refused) and hands zeep the re-serialised tree,
  which by construction has no DTD and no entity references left.

zeep's own settings forbid DTDs, entities and external fetches as a second line.
Documents are cached per (path, modification time): every sink and worker of a process shares
one parsed WSDL (zeep documents are read-only once loaded).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import zeep
import zeep.exceptions
from lxml import etree
from zeep.transports import Transport
from zeep.wsdl import Document

from connectors.soap_erp.xmlsafe import SafeXml, XmlMalformedError, XmlSecurityError
from integration_bus.connector import ConfigError, PermanentError

__all__ = ["LocalFiles", "WsdlCache", "zeep_settings"]

_MAX_WSDL_FILE = 8 * 1024 * 1024


def zeep_settings() -> zeep.Settings:
    """zeep's parser settings: strict, no huge trees, no DTD, no entities, no external fetch."""
    return zeep.Settings(strict=True, xml_huge_tree=False, forbid_dtd=True,
                         forbid_entities=True, forbid_external=True)


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

    def load(self, url: str) -> bytes:
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
            self._documents[key] = document
            return document
