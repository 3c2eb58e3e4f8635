"""Hostile SOAP answers the fake ERP can send (``hostile`` injection): what a compromised or
broken ERP, or a man in the middle, could put in a response.

Each looks like a plausible QueryStock answer around its trick, so a parser that accepted it
would hand the trick's result (a file's content, a fetched URL, a huge expansion) to the
caller as the material name.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterator

__all__ = ["HUGE_BYTES", "gzip_bomb", "hostile_body"]

HUGE_BYTES = 50 * 1024 * 1024
_ENV = ('<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:t="urn:retail:erp:types"><soap:Body><t:QueryStockResponse><t:Stock>')
_TAIL = ('<t:Plant>1042</t:Plant><t:StorageLocation>0001</t:StorageLocation>'
         '<t:OnHand>1</t:OnHand><t:Reserved>0</t:Reserved><t:Available>1</t:Available>'
         '</t:Stock></t:QueryStockResponse></soap:Body></soap:Envelope>')


def _with_material(prolog: str, material: str) -> bytes:
    return f'<?xml version="1.0"?>{prolog}{_ENV}<t:Material>{material}</t:Material>{_TAIL}' \
        .encode()


def _laughs() -> bytes:
    entities = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{(f"&lol{i - 1};" if i > 1 else "&lol;") * 10}">'
        for i in range(1, 10))
    return _with_material(f"<!DOCTYPE soap:Envelope [{entities}]>", "&lol9;")


def _huge() -> Iterator[bytes]:
    """A 50 MB answer in 64 KiB chunks (never held in memory here either)."""
    head = f'<?xml version="1.0"?>{_ENV}<t:Material>'.encode()
    yield head
    chunk = b"A" * 65536
    sent = len(head)
    while sent < HUGE_BYTES:
        yield chunk
        sent += len(chunk)
    yield f"</t:Material>{_TAIL}".encode()


def _wide(count: int = 400_000) -> bytes:
    """1.6 MB of empty elements: small on the wire, a 60 MB tree (elements cost ~150 B)."""
    return _with_material("", "M").replace(b"<t:Stock>", b"<t:Stock>" + b"<x/>" * count)


def _deep(levels: int = 10_000) -> bytes:
    inner = "<t:x>" * levels + "</t:x>" * levels
    return _with_material("", "M") .replace(b"<t:Stock>", f"<t:Stock>{inner}".encode())


@functools.cache  # made once per process: 0.2 s of compression is not the client's time
def gzip_bomb() -> bytes:
    """About 50 KB of gzip that inflates to 50 MB (sent with Content-Encoding: gzip)."""
    squeezer = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [squeezer.compress(f'<?xml version="1.0"?>{_ENV}<t:Material>'.encode())]
    block = b"A" * (1024 * 1024)
    parts += [squeezer.compress(block) for _ in range(HUGE_BYTES // len(block))]
    parts.append(squeezer.compress(f"</t:Material>{_TAIL}".encode()) + squeezer.flush())
    return b"".join(parts)


def hostile_body(payload: str, target: str | None) -> bytes | Iterator[bytes]:
    """The body of a hostile answer (bytes, or chunks for the 50 MB one)."""
    if payload == "xxe_file":
        path = target or "/etc/passwd"
        return _with_material(f'<!DOCTYPE soap:Envelope [<!ENTITY xxe SYSTEM "file://{path}">]>',
                              "&xxe;")
    if payload == "xxe_network":
        url = target or "http://127.0.0.1:9/xxe"
        return _with_material(f'<!DOCTYPE soap:Envelope SYSTEM "{url}/evil.dtd" '
                              f'[<!ENTITY xxe SYSTEM "{url}">]>', "&xxe;")
    if payload == "billion_laughs":
        return _laughs()
    if payload == "doctype":
        return _with_material("<!DOCTYPE soap:Envelope>", "M")
    if payload in ("huge", "huge_declared"):
        return _huge()
    if payload == "deep":
        return _deep()
    if payload == "wide":
        return _wide()
    if payload == "gzip_bomb":
        return gzip_bomb()
    raise ValueError(f"unknown hostile payload {payload!r}")
