"""OpenTelemetry tracing, configured only by the standard ``OTEL_*`` environment variables.

Off unless ``OTEL_TRACES_EXPORTER`` names an exporter (``console``, ``otlp``, or any installed
``opentelemetry_traces_exporter`` entry point such as ``otlp_proto_http``); ``none``, an unset
variable or ``OTEL_SDK_DISABLED=true`` keep it off. (The OpenTelemetry default for an unset
exporter is ``otlp``; the bus deliberately traces nothing until asked.) The exporter itself
reads ``OTEL_EXPORTER_OTLP_ENDPOINT`` and friends; the resource reads ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES``; the sampler ``OTEL_TRACES_SAMPLER``; the batch processor
``OTEL_BSP_*``.

When off, :class:`Tracing` is inert and nothing of OpenTelemetry is imported here, so the bus
runs without the SDK (the ``otel`` extra). When on, the SDK must be installed (``pip install
integration-bus[otel]``), else start-up fails with a ConfigError saying so.

Trace context travels in envelope headers as W3C ``traceparent``/``tracestate``. ``derive()``
copies headers, so a derived envelope stays in its parent's trace; the worker re-points the
outputs of a route at the route's span (:meth:`Tracing.stamp`), and every publish re-points
the published envelope at its publish span, so one web order is one trace through every route
it passes. The tracer provider belongs to the :class:`Tracing` object (nothing global is set).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from integration_bus.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

    from integration_bus.envelope import Envelope

__all__ = ["TRACE_HEADERS", "Tracing"]

#: the envelope headers that carry W3C trace context
TRACE_HEADERS = ("traceparent", "tracestate")
_PROTOCOL_EXPORTERS = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}


class Tracing:
    """Spans for one bus, or nothing (``enabled`` False). ``shutdown()`` flushes; idempotent."""

    def __init__(self, provider: Any = None) -> None:
        self._provider = provider
        self.enabled = provider is not None
        self._tracer: Tracer | None = provider.get_tracer("integration_bus") if provider else None
        #: compiled pipeline -> its copy with a span per step (built once per pipeline version)
        self._pipelines: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()  # worker threads share this object
        if self.enabled:
            from opentelemetry import trace
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )

            self._api = trace
            self._propagator = TraceContextTextMapPropagator()

    @classmethod
    def off(cls) -> Tracing:
        return cls()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Tracing:
        """Tracing as the ``OTEL_*`` variables in ``environ`` ask (off by default)."""
        names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",")
                 if n.strip() and n.strip() != "none"]
        if not names or environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return cls.off()
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER={environ['OTEL_TRACES_EXPORTER']} asks for tracing, but "
                f"the OpenTelemetry SDK is not installed ({exc})",
                hint="pip install 'integration-bus[otel]', or unset OTEL_TRACES_EXPORTER"
            ) from exc
        provider = TracerProvider(resource=Resource.create())
        for name in names:
            provider.add_span_processor(BatchSpanProcessor(_exporter(name, environ)))
        return cls(provider)

    def shutdown(self) -> None:
        """Export what is buffered and stop (idempotent)."""
        provider, self._provider = self._provider, None
        if provider is not None:
            provider.shutdown()

    # -- spans -----------------------------------------------------------------------------------
    def start(self, name: str, *, parent: Context | None = None, parent_span: Span | None = None,
              kind: str = "internal", attributes: Mapping[str, Any] | None = None) -> Span:
        """A started span (end it yourself), child of ``parent`` (a context), ``parent_span``
        or else the current span."""
        assert self._tracer is not None
        if parent_span is not None:
            parent = self._api.set_span_in_context(parent_span)
        return self._tracer.start_span(name, context=parent,
                                       kind=getattr(self._api.SpanKind, kind.upper()),
                                       attributes=dict(attributes or {}))

    @contextlib.contextmanager
    def span(self, name: str, attributes: Mapping[str, Any] | None = None,
             kind: str = "internal") -> Iterator[Span | None]:
        """A current span around a block (nothing when off); errors are recorded on it."""
        if not self.enabled:
            yield None
            return
        assert self._tracer is not None
        with self._tracer.start_as_current_span(
                name, kind=getattr(self._api.SpanKind, kind.upper()),
                attributes=dict(attributes or {})) as span:
            yield span

    def has_current(self) -> bool:
        """Whether a span is current (in this thread's context)."""
        return bool(self._api.get_current_span().get_span_context().is_valid)

    def use(self, span: Span) -> contextlib.AbstractContextManager[Any]:
        """Make ``span`` current for a block (without ending it)."""
        return self._api.use_span(span, end_on_exit=False)

    def failed(self, span: Span, error: BaseException | str) -> None:
        """Mark ``span`` as failed with ``error``."""
        description = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        span.set_status(self._api.Status(self._api.StatusCode.ERROR, description[:500]))
        if isinstance(error, BaseException):
            span.record_exception(error)

    # -- context in envelope headers -------------------------------------------------------------
    def parent_of(self, envelope: Envelope) -> Context | None:
        """The trace context an envelope carries (None: it starts a trace)."""
        headers = envelope.headers
        if "traceparent" not in headers:
            return None
        return self._propagator.extract({k: str(headers[k]) for k in TRACE_HEADERS
                                         if k in headers})

    def stamp(self, envelope: Envelope, span: Span | None = None) -> Envelope:
        """``envelope`` pointing at ``span`` (default: the current span) as its trace parent."""
        carrier: dict[str, str] = {}
        context = self._api.set_span_in_context(span) if span is not None else None
        self._propagator.inject(carrier, context=context)
        if not carrier:
            return envelope
        headers = {k: v for k, v in envelope.headers.items() if k not in TRACE_HEADERS}
        headers.update(carrier)
        return dataclasses.replace(envelope, headers=headers)

    def pipeline(self, pipeline: Any) -> Any:
        """``pipeline`` with a span per step when it offers ``with_step_spans`` (compiled
        mappings do); other pipelines run as they are, inside their route's span."""
        make = getattr(pipeline, "with_step_spans", None)
        if make is None:
            return pipeline
        with self._lock:
            traced = self._pipelines.get(pipeline)
            if traced is None:
                traced = self._pipelines[pipeline] = make(self.wrap_step)
        return traced

    def wrap_step(self, label: str, kind: str,
                  func: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        """A mapping step's function, run inside a span of its own (``step LABEL``)."""
        tracer = self._tracer
        assert tracer is not None
        attributes = {"bus.step": label, "bus.step.kind": kind}

        def traced(doc: Any, ctx: Any) -> Any:
            with tracer.start_as_current_span(f"step {label}", attributes=attributes):
                return func(doc, ctx)
        return traced


def _exporter(name: str, environ: Mapping[str, str]) -> Any:
    """The span exporter an ``OTEL_TRACES_EXPORTER`` name stands for."""
    if name == "console":
        # One span per line on the stdout of *now* (not of import time), so a caller may
        # redirect it; compact JSON keeps it greppable.
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stdout,
                                   formatter=lambda span: span.to_json(indent=None) + "\n")
    if name == "otlp":
        protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                    or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "").strip()
        if protocol and protocol not in _PROTOCOL_EXPORTERS:
            raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported",
                              hint=f"use one of {', '.join(_PROTOCOL_EXPORTERS)}")
        name = _PROTOCOL_EXPORTERS.get(protocol, "otlp")
    found = entry_points(group="opentelemetry_traces_exporter", name=name)
    if not found:
        known = sorted(e.name for e in entry_points(group="opentelemetry_traces_exporter"))
        raise ConfigError(f"OTEL_TRACES_EXPORTER names {name!r}, which is not installed",
                          hint=f"installed: {', '.join(known) or 'none'}; "
                               "pip install 'integration-bus[otel]' for otlp")
    return next(iter(found)).load()()
