"""The public API for connector plugins: what a plugin implements and what the runtime hands it.

A connector package imports only this module (and what it re-exports). A plugin registers under
the entry-point group ``integration_bus.connectors`` a :class:`ConnectorPlugin`: its name, the
pydantic config model of its source and/or sink (the spec that drives validation, ``bus lint``
and the generated JSON Schema), and constructors.

Lifecycle: the runtime validates config at start-up (constructors validate; run loops don't),
builds sources/sinks with a :class:`ConnectorContext`, calls ``open()``, uses them, and calls
``close()`` (idempotent) at shutdown.

An entry point names the plugin, or a function without arguments returning a fresh one (a
factory, called for every bus: state a plugin's instances share — pacers, breakers, caches —
lives in the objects it builds, never in a module). A fake of the connector's system registers
apart, as a :class:`Simulator` under ``integration_bus.simulators``.

Services for plugins — one implementation each, used by the core and the built-in connectors
(docs/plugins.md, "Services for plugins"):

- ``ConnectorContext.load_mapping``: a mapping file compiled with the project's xref tables;
- :func:`load_model` / :func:`parse_model` / :class:`ConfigProblem`: YAML into a pydantic model,
  every problem a ConfigError at file:line:col with a did-you-mean;
- :func:`did_you_mean` / :func:`closest`: the hint for an unknown name;
- :class:`Backoff`: exponential delays with a cap and jitter, waited on a stop event;
- :class:`CircuitBreaker`: stop calling a target that is down, probe it once;
- :class:`HttpServer` (+ :class:`HttpLimits`, ``http_api``): the bus's ASGI runner, in the
  caller's thread (``run(stop)``) or its own (``start()``/``stop()``);
- :func:`http_client` (+ :class:`HttpTimeouts`): an httpx client under the bus's limits;
- :func:`stop_on_signals` / :func:`wait_for_stop`: a stop event SIGTERM and SIGINT set (from a
  handler that takes no lock), and a main thread's wait for it (in slices: CPython runs handlers
  only in the main thread, between bytecodes).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel

from integration_bus.backoff import Backoff, BackoffState
from integration_bus.breaker import BreakerState, CircuitBreaker
from integration_bus.durations import Millis
from integration_bus.envelope import Envelope, check_type
from integration_bus.errors import (
    BusError,
    CircuitOpen,
    ConfigError,
    PermanentError,
    TransientError,
    UnpublishableError,
    UnroutableError,
)
from integration_bus.http_limits import HttpLimits, HttpTimeouts
from integration_bus.httpbody import (
    ACCEPT_ENCODING,
    ResponseDecodeError,
    ResponseTooLarge,
    endpoint_label,
    read_body,
)
from integration_bus.pipeline import Pipeline
from integration_bus.redact import known, redact_url
from integration_bus.simulator import SimulatedSystem, Simulator
from integration_bus.source_batch import *  # noqa: F403  (BatchSource, SourceBatch, run_batch_source)
from integration_bus.suggest import closest, did_you_mean
from integration_bus.threads import stop_on_signals, wait_for_stop
from integration_bus.yamlmodel import ConfigProblem, load_model, parse_model
from integration_bus.yamlsafe import Locator, read_yaml_text

if TYPE_CHECKING:
    from integration_bus.http_client import http_client
    from integration_bus.http_server import HttpServer
    from integration_bus.http_server import api as http_api

__all__ = [
    "ACCEPT_ENCODING",
    "Backoff",
    "BackoffState",
    "BatchSink",
    "BreakerState",
    "BusError",
    "CircuitBreaker",
    "CircuitOpen",
    "ConfigError",
    "ConfigProblem",
    "ConnectorContext",
    "ConnectorPlugin",
    "CursorStore",
    "Envelope",
    "HttpLimits",
    "HttpServer",
    "HttpTimeouts",
    "Locator",
    "LookupSink",
    "Millis",
    "PermanentError",
    "Pipeline",
    "PollingSource",
    "Publisher",
    "ResponseDecodeError",
    "ResponseTooLarge",
    "SeenStore",
    "SimulatedSystem",
    "Simulator",
    "Sink",
    "Source",
    "StockBook",
    "StockReader",
    "StockReading",
    "TransientError",
    "UnpublishableError",
    "UnroutableError",
    "XrefTable",
    "check_type",
    "closest",
    "deduplicated_downstream",
    "did_you_mean",
    "document_reference",
    "endpoint_label",
    "http_api",
    "http_client",
    "load_model",
    "parse_model",
    "read_body",
    "read_yaml_text",
    "redact_url",
    "scrub_secrets",
    "stop_on_signals",
    "wait_for_stop",
]


def document_reference(key: str, prefix: str, length: int) -> str:
    """The external document reference of an idempotency key: ``prefix`` + base32(SHA-256(key)),
    cut to ``length`` — deterministic, so every copy of a message (and a step that reverses
    it) names the same document."""
    digest = base64.b32encode(hashlib.sha256(key.encode()).digest()).decode().rstrip("=")
    return (prefix + digest)[:length]


def scrub_secrets(text: str) -> str:
    """``text`` without secrets: URL passwords, secret query values, credentials, and every
    value the loaded configurations mark secret (replaced by ``***``). For whatever a plugin
    puts in a log line, an error message or a metrics label itself; the bus applies it too
    at each of those boundaries."""
    return known().scrub(text)


class Publisher(Protocol):
    """Publishes envelopes to ``bus.ingress`` (routing key = type): persistent, mandatory,
    publisher-confirmed. Thread-confined: one per thread, from ``ConnectorContext.open_publisher``.
    """

    def publish(self, envelope: Envelope) -> None:
        """Return once the broker confirmed and routed it; else raise (UnroutableError,
        PublishNacked, BrokerUnavailable)."""

    def publish_many(self, envelopes: Sequence[Envelope]) -> list[BusError | None]:
        """Publish with a window of unconfirmed messages; one outcome per envelope, in order
        (None = confirmed and routed). Never reports success for an unconfirmed message."""

    def close(self) -> None: ...


class SeenStore(Protocol):
    """Durable memory of keys a connector already took in (webhook delivery ids, business event
    ids). Remember a key only *after* its envelope was confirmed: a key remembered for a publish
    that then failed would make the sender's retry look like a duplicate and lose it."""

    def seen(self, keys: Sequence[str]) -> dict[str, str | None]:
        """Keys remembered before -> the envelope id stored with them."""

    def remember(self, items: Sequence[tuple[str, str | None]]) -> None:
        """Remember (key, envelope id) pairs; idempotent."""


class StockBook(Protocol):
    """The bus's stock projection (retail core): inventory levels applied by compare-and-set
    on their source version, so late or replayed events never roll stock back."""

    def apply_envelopes(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]: ...

    def available_to_promise(self, pairs: Sequence[tuple[str, str]]
                             ) -> dict[tuple[str, str], Decimal | None]:
        """Available to promise per (sku, location): on hand - reserved - safety stock
        (+ in transit where configured), never below zero; None for a pair it has no level of."""


@dataclass(frozen=True, slots=True)
class StockReading:
    """One (sku, location) as another system reports it, in the bus's own SKU and location
    codes (the reader translates its system's keys). Quantities are exact decimals; a figure the
    system does not keep is None (a shop keeps only what it may sell: ``available``)."""

    sku: str
    location: str
    on_hand: Decimal | None = None
    reserved: Decimal | None = None
    available: Decimal | None = None
    version: int | None = None


@runtime_checkable
class StockReader(Protocol):
    """A source or sink that can say what stock its system holds (``bus reconcile``).

    ``read_stock(pairs)`` returns one reading per requested (sku, location) that the system has
    a record of; a pair it has no record of is left out (the caller decides what absence
    means). ``pairs=None`` asks for every level the system can list (a shop's inventory list).
    Raises TransientError when the system cannot be reached, PermanentError when it refuses
    (or, for ``None``, when it can only be asked per item, as an ERP's stock query per
    material is), ConfigError when the instance cannot name a requested key in its system's
    terms (a location missing from its location table).
    """

    name: str

    def read_stock(self, pairs: Sequence[tuple[str, str]] | None) -> list[StockReading]: ...


class XrefTable(Protocol):
    """A cross-reference table of the project (``mappings/xref/NAME.csv`` or ``.yaml``), as a
    mapping's ``xref()`` reads it: value columns of key -> value."""

    name: str
    file: str

    @property
    def columns(self) -> tuple[str, ...]: ...

    def column(self, column: str | None) -> Mapping[str, Any]:
        """The values of ``column`` (the first value column when None); KeyError if unknown."""


class CursorStore(Protocol):
    """Durable per-source state (file offsets, poll cursors); survives restarts."""

    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str) -> None: ...


@runtime_checkable
class Source(Protocol):
    """Brings envelopes in. ``run`` loops until ``stop`` is set (or the input is exhausted and the
    source is not following it), publishing through ``publisher`` and acknowledging its own
    system (cursor, file move, HTTP answer) only after the publish was confirmed."""

    name: str

    def run(self, publisher: Publisher, stop: threading.Event) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class PollingSource(Protocol):
    """A source that asks its system for news on a schedule (ERP stock changes, shop orders).

    ``poll()`` does one round: fetch what changed since the cursor and hand it to
    ``ConnectorContext.stage(envelopes, cursor=(key, value))``, which commits the envelopes to
    the outbox together with the new cursor in one transaction (the relay then publishes them
    with confirms): a crash can neither lose what was fetched nor advance the cursor past it.
    The runtime runs at most one poll per source at a time (a lease in the store), every
    ``interval_ms`` — in ``bus run`` and, with celery beat, in ``bus scheduler``.
    Returns how many envelopes it staged.
    """

    name: str
    interval_ms: int

    def poll(self) -> int: ...

    def close(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    """Delivers an envelope to a system. Raises TransientError (retry later) or PermanentError
    (dead-letter now); any other exception counts as transient. Receives each idempotency key at
    most once under normal operation; after a crash it may see a key again (see LookupSink)."""

    name: str

    def deliver(self, envelope: Envelope) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class LookupSink(Sink, Protocol):
    """A sink that can tell whether an envelope's effect already happened at the target (by its
    idempotency key / external reference). The runtime asks before re-sending a delivery that a
    crash left in doubt."""

    def lookup(self, envelope: Envelope) -> bool: ...


@runtime_checkable
class BatchSink(Sink, Protocol):
    """A sink that delivers a batch at once (e.g. with windowed publisher confirms). The runtime
    hands it every envelope of a worker batch bound for it; one outcome per envelope, in order
    (None = delivered, else the exception, classified as for ``deliver``)."""

    def deliver_many(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]: ...


def deduplicated_downstream(sink: Sink) -> bool:
    """True for a sink whose effect is itself deduplicated downstream by the idempotency key it
    is given: it sets ``deduplicated_downstream = True`` (the ``bus`` sink: what it republishes
    carries a key derived from the delivered one, and every route that takes it claims that key
    in its own sinks' ledger). The runtime takes no ledger claim for such a sink, so a
    redelivery after a crash sends again and the copy is absorbed one hop later
    (docs/lifecycle.md, "One worker batch")."""
    return getattr(sink, "deduplicated_downstream", False) is True


@dataclass(frozen=True)
class ConnectorContext:
    """What the runtime hands a plugin instance.

    ``reject(raw, error, source_ref)`` puts input that cannot become an envelope (a bad line, an
    unroutable record) into the dead-letter store with its error and where it came from
    (e.g. ``{"file": ..., "line": ...}``), so nothing is dropped silently.
    ``record(event, detail)`` writes a journal event about the connector itself (a late file,
    a quarantined batch), visible in ``bus trace`` and the journal.
    ``rejected(reason, event, detail)`` is ``record`` for input the source refused as a whole
    (a quarantined, refused or duplicate file; a webhook answered 4xx): ``bus status`` counts
    these per source and reason, and ``bus_source_rejections_total`` counts them on /metrics.
    ``stage(envelopes, cursor=(key, value))`` commits envelopes to the outbox (published to
    ``bus.ingress`` by the relay, with confirms) and, in the same transaction, sets the cursor.
    ``span(name, attributes)`` is a context manager: a tracing span around a unit of reading
    (a file, a request) while tracing is on (``OTEL_TRACES_EXPORTER``), nothing otherwise;
    envelopes published inside it belong to its trace.
    """

    instance: str
    root: Path
    cursors: CursorStore
    seen: SeenStore
    stock: StockBook
    open_publisher: Callable[[], Publisher]
    log: Any  # a structlog BoundLogger bound to the instance
    reject: Callable[[bytes | str, BusError, dict[str, Any]], None]
    record: Callable[[str, dict[str, Any]], None]
    stage: Callable[[Sequence[Envelope], tuple[str, str] | None], None]
    metrics: Any  # integration_bus.metrics.Metrics; plugins add collectors to .registry
    #: compiles one mapping file (an absolute path) against the project's xref tables and
    #: schemas, as routes' mappings are; plugins call :meth:`load_mapping`
    compile_mapping: Callable[[Path], Pipeline]
    clock: Callable[[], float] = time.time
    span: Callable[[str, Mapping[str, Any]], contextlib.AbstractContextManager[Any]] = (
        lambda name, attributes: contextlib.nullcontext())

    def rejected(self, reason: str, event: str, detail: dict[str, Any]) -> None:
        """Input this source refused as a whole, for ``reason`` (``quarantined``, ``refused``,
        ``duplicate``, ``webhook_4xx``, ...): journal event ``event`` with ``detail`` and
        ``rejection: reason`` (durable: ``bus status`` reads it), and one more on
        ``bus_source_rejections_total{source, reason}``. Raises what ``record`` raises
        (StoreUnavailable) after counting."""
        counter = getattr(self.metrics, "source_rejections", None)
        if counter is not None:
            counter.labels(self.instance, reason).inc()
        self.record(event, {**detail, "rejection": reason})
    #: another sink instance of the same config, by name, built on call (a process manager's
    #: effects go through the sinks the config already has)
    sinks: Callable[[str], Sink] | None = None
    #: the order process manager's saga store (integration_bus.retail.orders.book.SagaBook)
    sagas: Any = None
    #: the bus's Store, for the core's own plugins (integration_bus.retail); connectors use
    #: the typed views above
    store: Any = None

    def resolve(self, path: str | Path) -> Path:
        """A config path relative to the project dir (the config dir's parent)."""
        candidate = Path(path)
        return candidate if candidate.is_absolute() else self.root / candidate

    def load_mapping(self, path: str | Path, field: str | None = None) -> Pipeline:
        """The mapping file ``path`` (relative to the project dir) compiled once, now, with
        the project's xref tables and schemas: call it per envelope (0..n outputs; raises
        MappingError for input it cannot map). ConfigError (file:line:col, and ``field`` —
        the config key that named the file) when the file or what it uses is broken."""
        try:
            return self.compile_mapping(self.resolve(path))
        except ConfigError as exc:
            exc.with_context(field=field)
            raise

    def xref(self, name: str, field: str | None = None) -> XrefTable:
        """The project's cross-reference table ``name`` (``mappings/xref/NAME.csv|yaml``, the
        tables mappings read with ``xref()``), loaded now. ConfigError naming ``field`` with a
        did-you-mean when there is no such table, or naming file:line when it is malformed."""
        from integration_bus.mapping.xref import load_tables

        directory = self.root / "mappings" / "xref"
        tables = load_tables(directory)
        if name not in tables:
            raise ConfigError(f"there is no xref table {name!r} in {directory}", field=field,
                              hint=did_you_mean(name, tables))
        return tables[name]


@dataclass(frozen=True)
class ConnectorPlugin:
    """A connector: a name, its config specs and its constructors."""

    name: str
    summary: str
    source_config: type[BaseModel] | None = None
    sink_config: type[BaseModel] | None = None
    create_source: Callable[[Any, ConnectorContext], Source | PollingSource] | None = None
    create_sink: Callable[[Any, ConnectorContext], Sink] | None = None
    #: click commands (or groups) the connector adds to ``bus`` (e.g. ``bus layout``)
    commands: tuple[Any, ...] = ()
    #: ``lint(config, resolve)``: checks the files an instance's config names (layouts,
    #: WSDLs) without connecting or creating anything; raises ConfigError. ``bus lint`` calls
    #: it for every source and sink; ``resolve`` makes a config path absolute.
    lint: Callable[[Any, Callable[[str], Path]], None] | None = None

    def __post_init__(self) -> None:
        if (self.source_config is None) != (self.create_source is None):
            raise ValueError(f"connector {self.name}: source_config and create_source go together")
        if (self.sink_config is None) != (self.create_sink is None):
            raise ValueError(f"connector {self.name}: sink_config and create_sink go together")


def __getattr__(name: str) -> Any:
    """``HttpServer`` (the one ASGI server runner) and ``http_api`` (a FastAPI app without
    OpenAPI/docs unless the limits enable them), from :mod:`integration_bus.http_server`, and
    ``http_client`` (:mod:`integration_bus.http_client`) are loaded on first use: uvicorn,
    FastAPI and httpx stay out of processes that serve and call no HTTP."""
    if name in ("HttpServer", "http_api"):
        from integration_bus import http_server

        return http_server.HttpServer if name == "HttpServer" else http_server.api
    if name == "http_client":
        from integration_bus import http_client

        return http_client.http_client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
