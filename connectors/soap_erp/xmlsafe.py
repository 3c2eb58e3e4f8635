"""The one hardened XML parser of the SOAP connector, its fake ERP and the WSDL loader.

Everything that turns bytes from outside into an lxml tree goes through :meth:`SafeXml.parse`:
SOAP responses (client), SOAP requests (fake ERP), the shipped WSDL and XSD files (pre-parsed
here before zeep sees them, see ``client``). The rules:

- **size cap**: more than ``max_bytes`` is refused before parsing (the HTTP client also stops
  reading a body at the cap, so a 50 MB answer never sits in memory);
- **node cap**: more than ``max_nodes`` elements plus attributes (plus namespace declarations)
  is refused before a tree is built. A tree costs 100-200 bytes per node, so 1.5 million empty
  elements (6 MB of ``<a/>``) would cost about 200 MB. Documents with fewer ``<`` and ``=``
  than the cap pass at the price of two byte scans; others are counted by a tree-less parse
  that stops at the cap. Text nodes need no count of their own: they sit between tags, so
  there are at most twice as many as elements;
- **no DOCTYPE at all**: the prolog is scanned before lxml sees the bytes (UTF-8/16/32), and the
  parsed tree's ``docinfo`` is checked again, so no internal subset is ever used: no entity
  declarations (billion laughs), no external entities (XXE: files, URLs), no external DTD;
- the lxml parser itself loads no DTD, resolves no entities, uses no network, keeps libxml2's
  limits on (``huge_tree=False``: nesting deeper than 256 levels, text nodes over 10 MB are
  refused) and drops comments and processing instructions.

Refusals raise :class:`XmlSecurityError` (a PermanentError: the same bytes will be refused
again); bytes that are simply not well-formed XML raise :class:`XmlMalformedError`. Both name
``what`` was being parsed (e.g. ``response to PostStockAdjustment``) and never quote the
refused content beyond a short, printable excerpt.

Parsers are thread-confined in lxml, so :class:`SafeXml` keeps one per thread; its options are
fixed here and nowhere else.
"""

from __future__ import annotations

import codecs
import threading
from typing import Any

from lxml import etree

from integration_bus.connector import PermanentError

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_NODES", "SafeXml", "XmlMalformedError",
           "XmlSecurityError", "excerpt"]

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_NODES = 250_000  # elements + attributes: a tree of ~50 MB at worst
_PROLOG_SCAN = 64 * 1024  # a prolog longer than this (before the root element) is refused


class XmlSecurityError(PermanentError):
    """XML refused for safety: a DOCTYPE (entities, XXE, external DTD), a body over the size
    cap, nesting or text beyond libxml2's limits. Context: ``what``, ``reason``."""


class XmlMalformedError(PermanentError):
    """Bytes that are not well-formed XML. Context: ``what``, ``line``, ``excerpt``."""


def excerpt(data: bytes | str, limit: int = 300) -> str:
    """A short printable excerpt of a body (whitespace collapsed) for errors and dead letters."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = " ".join(text[: limit * 4].split())
    return text[:limit] + ("…" if len(text) > limit else "")


def _decode_head(head: bytes) -> str | bytes:
    """The prolog region as text when it is UTF-16/32 (else the bytes: ASCII-compatible)."""
    boms = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
            (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
    for bom, codec in boms:
        if head.startswith(bom):
            return head[len(bom):].decode(codec, "ignore")
    patterns = {b"\x00\x00\x00<": "utf-32-be", b"<\x00\x00\x00": "utf-32-le",
                b"\x00<\x00?": "utf-16-be", b"<\x00?\x00": "utf-16-le"}
    detected = patterns.get(head[:4])  # no BOM: the XML spec's detection by the first bytes
    return head.decode(detected, "ignore") if detected is not None else head


def _prolog_problem(head: str | bytes) -> str | None:
    """Why the prolog is refused (a DOCTYPE or any other ``<!`` declaration), or None."""
    text: str = head if isinstance(head, str) else head.decode("latin-1")
    if text.startswith("\ufeff"):
        text = text[1:]
    i, n = 0, len(text)
    while i < n:
        if text[i] in " \t\r\n":
            i += 1
        elif text.startswith("<?", i):
            end = text.find("?>", i + 2)
            if end < 0:
                return "the prolog does not end within the first 64 KiB"
            i = end + 2
        elif text.startswith("<!--", i):
            end = text.find("-->", i + 4)
            if end < 0:
                return "the prolog does not end within the first 64 KiB"
            i = end + 3
        elif text.startswith("<!", i):
            return ("a DOCTYPE declaration (DTDs, entities and external references are refused)"
                    if text.startswith("<!DOCTYPE", i) else "a declaration before the root")
        else:
            return None  # the root element (or text that lxml will refuse as malformed)
    return None if n < _PROLOG_SCAN else "the prolog does not end within the first 64 KiB"


class _TooManyNodes(Exception):
    pass


class _NodeCounter:
    """An lxml parser target: counts elements, attributes and namespace declarations, and
    stops the parse (no tree is built) once there are more than ``limit``."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        self.left -= 1 + len(attrib)
        if self.left < 0:
            raise _TooManyNodes

    def start_ns(self, prefix: str, uri: str) -> None:
        self.left -= 1

    def close(self) -> None:
        return None


class SafeXml:
    """The hardened parser (one lxml parser per thread, options fixed). ``max_bytes`` and
    ``max_nodes``: the size and node caps applied to every document this instance parses."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_nodes: int = DEFAULT_MAX_NODES) -> None:
        self.max_bytes = max_bytes
        self.max_nodes = max_nodes
        self._local = threading.local()

    def _parser(self) -> etree.XMLParser:
        parser: etree.XMLParser | None = getattr(self._local, "parser", None)
        if parser is None:
            parser = etree.XMLParser(
                resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                attribute_defaults=False, huge_tree=False, remove_comments=True,
                remove_pis=True, collect_ids=False, strip_cdata=True, recover=False)
            self._local.parser = parser
        return parser

    def parse(self, data: bytes, *, what: str, **context: Any) -> etree._Element:
        """The root element of ``data``. Raises XmlSecurityError or XmlMalformedError (context:
        ``what`` plus ``context``, e.g. operation and document number)."""
        if len(data) > self.max_bytes:
            raise XmlSecurityError(f"{what}: {len(data):,} bytes is over the cap of "
                                   f"{self.max_bytes:,}", what=what, reason="size", **context)
        problem = _prolog_problem(_decode_head(data[:_PROLOG_SCAN]))
        if problem is not None:
            raise XmlSecurityError(f"{what}: refused {problem}", what=what, reason="doctype",
                                   **context)
        if self._too_many_nodes(data):
            raise XmlSecurityError(f"{what}: refused: more than {self.max_nodes:,} elements and "
                                   "attributes", what=what, reason="limits", **context)
        try:
            root = etree.fromstring(data, self._parser())
        except etree.XMLSyntaxError as exc:
            message = str(exc.msg or exc)
            if "depth" in message.lower() or "huge" in message.lower() \
                    or "amplification" in message.lower():
                raise XmlSecurityError(f"{what}: refused by the parser's limits: {message}",
                                       what=what, reason="limits", **context) from None
            raise XmlMalformedError(f"{what}: not well-formed XML: {message}", what=what,
                                    line=exc.lineno, excerpt=excerpt(data, 120),
                                    **context) from None
        if root.getroottree().docinfo.doctype:
            raise XmlSecurityError(f"{what}: refused a DOCTYPE declaration", what=what,
                                   reason="doctype", **context)
        return root

    def _too_many_nodes(self, data: bytes) -> bool:
        """True when ``data`` holds more than ``max_nodes`` elements + attributes. Every element
        needs a ``<`` and every attribute an ``=`` (in UTF-16/32 too, as a byte), so few of
        them settle it without parsing; otherwise a tree-less parse counts up to the cap."""
        if data.count(b"<") + data.count(b"=") <= self.max_nodes:
            return False
        target: Any = _NodeCounter(self.max_nodes)  # lxml's stubs want every target method
        counter = etree.XMLParser(
            target=target, resolve_entities=False, no_network=True,
            load_dtd=False, huge_tree=False, remove_comments=True, remove_pis=True)
        try:
            etree.fromstring(data, counter)
        except _TooManyNodes:
            return True
        except etree.XMLSyntaxError:
            return False  # the real parse reports it, with its line
        return False
