"""Reading a partner's HTTP answer with limits: the one place a connector's client reads a body.

:func:`read_body` takes a *streamed* httpx response (``client.stream(...)`` or
``client.send(request, stream=True)``) and returns its bytes, decoded:

- at most ``limit`` bytes, whether announced (Content-Length), delivered, or inflated from a
  small compressed body: past that, :class:`ResponseTooLarge` (a PermanentError: the same
  request gets the same answer) names the limit, and reading stops there, so a 400 MB answer
  never sits in memory;
- ``gzip``/``deflate`` inflated in steps whose output is bounded (a compression bomb cannot
  expand past the limit); malformed compression, a compressed stream cut short, or an encoding
  we did not ask for raise :class:`ResponseDecodeError` (a TransientError: a garbled answer
  may come out right next time — and the request may have taken effect, so callers treat it
  like an answer lost on the way);
- before ``deadline`` (``time.monotonic()`` seconds) when given, else ``httpx.ReadTimeout``.

Errors name the endpoint by :func:`endpoint_label`: scheme, host, port and path only — never
user-info or the query string, where credentials travel.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from integration_bus.errors import PermanentError, TransientError

if TYPE_CHECKING:
    import httpx

__all__ = ["ACCEPT_ENCODING", "ResponseDecodeError", "ResponseTooLarge", "endpoint_label",
           "read_body"]

ACCEPT_ENCODING = "gzip, deflate"  # what read_body can inflate; send it, so nothing else comes


class ResponseTooLarge(PermanentError):
    """An answer over the size limit. Context: ``endpoint``, ``limit``, ``announced``."""


class ResponseDecodeError(TransientError):
    """An answer whose content-encoding cannot be decoded. Context: ``endpoint``,
    ``encoding``."""


def endpoint_label(url: object) -> str:
    """``scheme://host[:port]/path`` of ``url``: no user-info, no query, no fragment."""
    import httpx

    try:
        parsed = httpx.URL(str(url))
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<unparsable URL>"
    port = f":{parsed.port}" if parsed.port is not None else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parsed.path}"


def read_body(response: httpx.Response, *, limit: int, deadline: float | None = None,
              **context: Any) -> bytes:
    """The decoded body of a streamed ``response``; raises as the module docstring says
    (errors carry ``context`` plus the endpoint)."""
    where = {**context, "endpoint": endpoint_label(response.request.url)}
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ResponseTooLarge(f"the answer from {where['endpoint']} announces "
                               f"{int(declared):,} bytes; the limit is {limit:,}",
                               limit=limit, announced=int(declared), **where)
    parts: list[bytes] = []
    size = 0
    for chunk in _decoded(response, limit, where):
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(f"the answer from {where['endpoint']} is over the limit of "
                                   f"{limit:,} bytes", limit=limit, **where)
        if deadline is not None and time.monotonic() > deadline:
            import httpx

            raise httpx.ReadTimeout("the deadline passed while reading the answer",
                                    request=response.request)
        parts.append(chunk)
    return b"".join(parts)


def _decoded(response: httpx.Response, limit: int, where: dict[str, Any]) -> Iterator[bytes]:
    """The body's bytes, inflated with a bound on each step's output."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        yield from response.iter_raw()
        return
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise ResponseDecodeError(f"the answer from {where['endpoint']} uses content-encoding "
                                  f"{encoding!r}, which was not asked for", encoding=encoding,
                                  **where)
    # gzip: the gzip header; deflate: the zlib wrapper HTTP prescribes (raw deflate, which
    # some servers send instead, is tried when the first bytes are not a zlib header).
    inflater: Any = None
    try:
        for chunk in response.iter_raw():
            if not chunk:
                continue
            if inflater is None:
                inflater = zlib.decompressobj(_window(encoding, chunk))
            yield inflater.decompress(chunk, limit + 1)
            while inflater.unconsumed_tail:
                yield inflater.decompress(inflater.unconsumed_tail, limit + 1)
        if inflater is None:
            return  # an empty body
        yield inflater.flush()
    except zlib.error as exc:
        raise ResponseDecodeError(f"the {encoding} answer from {where['endpoint']} is not valid "
                                  f"{encoding} data ({exc})", encoding=encoding,
                                  **where) from exc
    if not inflater.eof:
        raise ResponseDecodeError(f"the {encoding} answer from {where['endpoint']} ends before "
                                  "its compressed stream does", encoding=encoding, **where)


def _window(encoding: str, first: bytes) -> int:
    if encoding != "deflate":
        return 16 + zlib.MAX_WBITS
    zlib_header = len(first) >= 2 and (first[0] & 0x0F) == 8 \
        and ((first[0] << 8) | first[1]) % 31 == 0
    return zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS
