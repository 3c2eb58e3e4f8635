"""The limits every HTTP face of the bus runs under, and the timeouts of every HTTP client
(config models: validated, documented, exported in the config's JSON Schema). Served by
:mod:`integration_bus.http_server`; clients made by :mod:`integration_bus.http_client`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from integration_bus.durations import Millis

__all__ = ["HttpLimits", "HttpTimeouts"]


class HttpLimits(BaseModel):
    """Deadlines and a connection limit for one HTTP server (webhooks, availability, metrics).

    A request's head (request line and headers) must arrive within ``header_timeout`` of the
    connection opening or of the previous answer, its body within ``body_timeout`` of the head;
    else the connection is closed. At ``max_connections`` open connections, a new one takes the
    place of the one that has waited longest for a request head (an idle or slow client); when
    every connection is busy with a request, the new one is answered 503 and closed. Errors that
    repeat (a timeout, a malformed request, an exception) are logged once and then counted in a
    summary line per ``log_every``, never as a flood of tracebacks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    header_timeout: Millis = Field(5_000, description="deadline for a request's head")
    body_timeout: Millis = Field(15_000, description="deadline for a request's body")
    keep_alive: Millis = Field(5_000, description="idle time allowed between requests")
    max_connections: int = Field(256, ge=1, le=65_536,
                                 description="open connections at most (each one a file "
                                             "descriptor); kept under the process's limit")
    max_header_bytes: int = Field(16_384, ge=1_024, le=1_048_576,
                                  description="largest request head, in bytes")
    shutdown_grace: Millis = Field(5_000, description="time requests in flight get at stop")
    log_every: Millis = Field(10_000, description="one summary line of repeated errors per")
    docs: bool = Field(False, description="serve /openapi.json and /docs (off: the API's "
                                          "shape is nobody's business by default)")


class HttpTimeouts(BaseModel):
    """Explicit httpx timeouts: nothing waits forever on a partner."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect: Millis = 5_000
    read: Millis = 15_000
    write: Millis = 15_000
    pool: Millis = 5_000

    @classmethod
    def from_millis(cls, *, connect: int, read: int, write: int, pool: int) -> HttpTimeouts:
        """Timeouts from whole milliseconds in code (a bare number given to the model is read
        as seconds, as in config files)."""
        return cls.model_validate({"connect": f"{connect}ms", "read": f"{read}ms",
                                   "write": f"{write}ms", "pool": f"{pool}ms"})
