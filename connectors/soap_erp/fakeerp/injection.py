"""Fault injection for the fake ERP, by config (``bus sim erp --faults FILE``) or by tests.

A plan is a list of rules; for each call the first rule that matches the operation and is due
decides what happens instead of (or around) the normal answer:

======================  ==========================================================================
``slow``                wait ``delay``, then answer normally
``timeout``             do the work (commit), then wait ``delay`` before answering (the client
                        gives up first: the classic "did it happen?" case)
``http_500``            ``500 Internal Server Error``, text/plain, no SOAP
``html``                ``502 Bad Gateway`` with an HTML page (a proxy in front of the ERP)
``server_fault``        SOAP Server/Receiver fault: database unavailable (an outage)
``client_fault``        SOAP Client/Sender fault: the request is refused
``business_fault``      SOAP Server/Receiver fault with ``subcode`` and detail ``code`` (e.g.
                        ``Deficit`` / ``M7-021``): a business rule refused the posting
``drop``                close the connection without doing anything
``drop_after_commit``   do the work (commit), then close the connection without an answer
``canned``              answer ``status`` (default 500) with ``body``, a SOAP envelope given
                        verbatim (a fault as some other SOAP stack writes it)
``hostile``             answer 200 with a hostile body: ``payload`` is one of ``xxe_file``,
                        ``xxe_network``, ``billion_laughs``, ``doctype``, ``huge`` (50 MB,
                        chunked), ``huge_declared`` (Content-Length 50 MB), ``deep``
                        (10,000 levels), ``wide`` (400,000 empty elements in 1.6 MB),
                        ``gzip_bomb`` (50 KB inflating to 50 MB)
======================  ==========================================================================

A rule matches calls of its ``operation`` (``*``: any) whose request contains the text ``when``
(if given: e.g. a material number, to fault one posting among many). ``every``: the rule fires
on every Nth matching call (1 = each); ``count``: at most that many times (none: forever).
YAML example::

    - {mode: drop_after_commit, operation: PostStockAdjustment, every: 20, count: 50}
    - {mode: slow, delay: 200ms}
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

from integration_bus.connector import Millis, load_model

__all__ = ["FaultPlan", "Injection", "Mode", "Payload"]

Mode = Literal["slow", "timeout", "http_500", "html", "server_fault", "client_fault",
               "business_fault", "drop", "drop_after_commit", "hostile", "canned"]
Payload = Literal["xxe_file", "xxe_network", "billion_laughs", "doctype", "huge",
                  "huge_declared", "deep", "wide", "gzip_bomb"]


class Injection(BaseModel):
    """One rule of a fault plan."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Mode
    operation: str = Field("*", description="operation name, or * for every operation")
    when: str | None = Field(None, description="only requests containing this text")
    every: int = Field(1, ge=1)
    count: int | None = Field(None, ge=1)
    delay: Millis = Field(0, description="slow / timeout: how long to wait")
    subcode: str = "Deficit"
    code: str = "M7-021"
    string: str = "Deficit of SL Unrestricted-use"
    payload: Payload | None = None
    body: str | None = Field(None, description="canned: the SOAP envelope answered verbatim")
    status: int = Field(500, ge=200, le=599, description="canned: the HTTP status")
    target: str | None = Field(None, description="xxe_file: a path; xxe_network: a URL")


class _Rules(RootModel[list[Injection]]):
    """A fault plan file: a YAML list of rules (an empty file: none)."""

    @model_validator(mode="before")
    @classmethod
    def _empty_file(cls, data: object) -> object:
        return [] if data is None else data


class FaultPlan:
    """Rules plus their counters; thread-safe. ``pick`` is asked once per call."""

    def __init__(self, rules: list[Injection] | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: list[Injection] = list(rules or [])
        self._seen: list[int] = [0] * len(self._rules)
        self._fired: list[int] = [0] * len(self._rules)

    @classmethod
    def load(cls, path: Path) -> FaultPlan:
        """A plan from a YAML list of rules (the bus's safe reader; ConfigError at
        file:line:col for a bad rule)."""
        return cls(load_model(path, _Rules).root)

    def set(self, *rules: Injection) -> None:
        """Replace the rules (and reset the counters)."""
        with self._lock:
            self._rules = list(rules)
            self._seen = [0] * len(rules)
            self._fired = [0] * len(rules)

    def clear(self) -> None:
        self.set()

    def fired(self) -> int:
        """How many times any rule fired."""
        with self._lock:
            return sum(self._fired)

    def pick(self, operation: str, request: bytes = b"") -> Injection | None:
        """The rule that fires for this call, if any (counted)."""
        with self._lock:
            for i, rule in enumerate(self._rules):
                if rule.operation not in ("*", operation):
                    continue
                if rule.when is not None and rule.when.encode() not in request:
                    continue
                if rule.count is not None and self._fired[i] >= rule.count:
                    continue
                self._seen[i] += 1
                if self._seen[i] % rule.every == 0:
                    self._fired[i] += 1
                    return rule
            return None
