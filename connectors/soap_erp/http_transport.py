"""HTTP for the SOAP client: httpx with explicit timeouts, TLS options, and a capped, deadline-
bound read. The boundary where httpx exceptions become bus errors.

:func:`post` sends one request and returns ``(status, media type, body)``, or raises:

- ErpUnavailable, ``in_doubt=False``: the request certainly did not reach the ERP (connect
  refused or timed out, no pooled connection free, TLS verification failed);
- ErpUnavailable, ``in_doubt=True``: it may have (no answer before the operation deadline, the
  connection dropped while sending or waiting) — look the document up before sending again;
- ErpUnavailable, ``in_doubt=True``, ``outcome="bad_encoding"``: the answer's gzip/deflate is
  malformed or cut short (it may have been a success: look the document up);
- XmlSecurityError: the answer announced or delivered more than ``max_response`` bytes (the
  read stops there: a 50 MB answer never sits in memory). gzip/deflate answers are inflated
  in bounded steps, so a small compressed body cannot expand past the cap either.

The body is read by the core's ``read_body`` (limits, bounded inflating); errors name the
endpoint without credentials.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from connectors.soap_erp.config import EndpointConfig, TlsConfig
from connectors.soap_erp.faults import ErpUnavailable
from connectors.soap_erp.xmlsafe import XmlSecurityError
from integration_bus.connector import (
    HttpTimeouts,
    ResponseDecodeError,
    ResponseTooLarge,
    http_client,
    read_body,
)

__all__ = ["endpoint_client", "post"]


def _tls(config: TlsConfig, resolve: Callable[[str], Path]) -> ssl.SSLContext | bool:
    if not config.verify:
        return False
    context = ssl.create_default_context(
        cafile=str(resolve(config.ca_file)) if config.ca_file else None)
    if config.client_cert:
        context.load_cert_chain(str(resolve(config.client_cert)),
                                str(resolve(config.client_key)) if config.client_key else None)
    return context


def endpoint_client(config: EndpointConfig, resolve: Callable[[str], Path],
                    pool_size: int) -> httpx.Client:
    """The connector API's HTTP client for one endpoint: its TLS and basic auth, the
    operation timeout for reading, writing and waiting for one of ``pool_size`` pooled
    connections (thread-safe)."""
    basic = config.basic_auth
    operation = config.timeouts.operation
    return http_client(
        HttpTimeouts.from_millis(connect=config.timeouts.connect, read=operation,
                                 write=operation, pool=operation),
        auth=httpx.BasicAuth(basic.username, basic.password.get_secret_value())
        if basic else None, verify=_tls(config.tls, resolve), max_connections=pool_size)


def post(http: httpx.Client, address: str, body: bytes, headers: Mapping[str, str], *,
         config: EndpointConfig, context: dict[str, Any]) -> tuple[int, str, bytes]:
    """POST ``body``; (status, media type, body read). Raises as the module docstring says;
    every error carries ``context`` (operation, document number, envelope id...)."""
    operation = context.get("operation", "the call")
    deadline = time.monotonic() + config.timeouts.operation / 1000
    try:
        with http.stream("POST", address, content=body, headers=headers) as response:
            data = _read(response, deadline, config.max_response, context)
            media = response.headers.get("content-type", "").split(";")[0].strip().lower()
            return response.status_code, media, data
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        tls = "CERTIFICATE_VERIFY_FAILED" in str(exc) or "SSL" in str(exc)
        raise ErpUnavailable(f"{operation}: cannot reach the ERP ({'TLS: ' if tls else ''}"
                             f"{type(exc).__name__}: {exc})", in_doubt=False,
                             outcome="tls_error" if tls else "connection_error",
                             **context) from None
    except httpx.TimeoutException as exc:
        raise ErpUnavailable(f"{operation}: no answer within the operation timeout "
                             f"({type(exc).__name__})", outcome="timeout", in_doubt=True,
                             **context) from None
    except httpx.TransportError as exc:
        raise ErpUnavailable(f"{operation}: the connection was lost before the answer "
                             f"({type(exc).__name__}: {exc})", outcome="connection_error",
                             in_doubt=True, **context) from None


def _read(response: httpx.Response, deadline: float, cap: int,
          context: dict[str, Any]) -> bytes:
    """The body, decoded, up to ``cap`` bytes and before the deadline (``read_body``), its
    errors in the ERP's terms: too large is a refused answer, garbled compression an answer
    lost on the way (the posting may have happened: ``in_doubt``)."""
    operation = context.get("operation", "the call")
    try:
        return read_body(response, limit=cap, deadline=deadline, **context)
    except ResponseTooLarge as exc:
        raise XmlSecurityError(f"{operation}: {exc.message}", reason="size",
                               outcome="refused_xml", **exc.context) from None
    except ResponseDecodeError as exc:
        raise ErpUnavailable(f"{operation}: {exc.message}", in_doubt=True,
                             outcome="bad_encoding", **exc.context) from exc
