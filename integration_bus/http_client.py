"""The HTTP client factory: an httpx client under the bus's limits, for every connector that
calls out over HTTP (a shop's REST API, an ERP's SOAP endpoint, a webhook sender).

What every client gets, so no connector forgets one:

- **explicit timeouts** (:class:`HttpTimeouts`, a config model: connect, read, write and
  waiting for a pooled connection) — nothing waits forever on a partner;
- **a bounded pool**: at most ``max_connections`` connections, all of them kept alive;
- **no redirects followed** (a 3xx is an answer the caller classifies, never a silent hop to
  another host with the same credentials);
- **TCP_NODELAY**: httpx may write a request's head and body separately; with Nagle's
  algorithm the second write could wait for the server's delayed ACK (~40 ms);
- ``Accept-Encoding`` of what :func:`~integration_bus.httpbody.read_body` inflates in bounded
  steps, and ``User-Agent: integration-bus``.

Read answers with ``read_body`` (size cap, bounded inflating) and translate httpx's
exceptions into the bus's errors at the connector's one boundary.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping

import httpx

from integration_bus.http_limits import HttpTimeouts
from integration_bus.httpbody import ACCEPT_ENCODING

__all__ = ["USER_AGENT", "HttpTimeouts", "http_client"]

USER_AGENT = "integration-bus"


def http_client(timeouts: HttpTimeouts, *, base_url: str = "",
                headers: Mapping[str, str] | None = None, auth: httpx.Auth | None = None,
                verify: ssl.SSLContext | bool = True,
                max_connections: int = 10) -> httpx.Client:
    """A new httpx client under the bus's limits (module doc). ``headers`` are added to (and
    may override) the defaults; ``verify`` is an SSL context (a CA file, a client
    certificate) or a bool; ``max_connections`` bounds the pool. The client is thread-safe;
    ``close()`` it (or use it as a context manager)."""
    if max_connections < 1:
        raise ValueError(f"max_connections must be at least 1 ({max_connections})")
    transport = httpx.HTTPTransport(
        verify=verify,
        limits=httpx.Limits(max_connections=max_connections,
                            max_keepalive_connections=max_connections),
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    timeout = httpx.Timeout(connect=timeouts.connect / 1000, read=timeouts.read / 1000,
                            write=timeouts.write / 1000, pool=timeouts.pool / 1000)
    return httpx.Client(base_url=base_url, auth=auth, timeout=timeout,
                        follow_redirects=False, transport=transport,
                        headers={"Accept-Encoding": ACCEPT_ENCODING, "User-Agent": USER_AGENT,
                                 **(headers or {})})
