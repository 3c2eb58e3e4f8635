"""The SOAP ERP sink: one ``operation`` per instance, idempotent postings, request/reply.

Per envelope:

1. **Request.** The ``request_mapping`` (if any) turns the envelope into the request (exactly
   one output; none = nothing to send), else the payload is the request: a dict of the
   operation's parameters.
2. **Document number.** ``prefix`` + base32(SHA-256(idempotency key)), set at
   ``document_number.field`` (replacing what the mapping put there): every copy of the
   envelope — redelivery, retry, replay — carries the same number, so the ERP can deduplicate.
3. **Look before resending.** When the posting may already have happened — a retry
   (``attempt > 0``), a replay, or an earlier call of this sink ended in doubt (timeout, dropped
   answer) — the ``lookup`` operation asks the ERP for the number first; found = done, nothing
   is sent. The runtime also calls :meth:`lookup` for a delivery a crash left in doubt.
4. **Call** through the :class:`~connectors.soap_erp.client.SoapClient` (breaker, timeouts,
   fault table). A delivery counts only on a checked answer: the operation's response element
   (the client) and, where ``document_number.answer`` names it, the ERP's document number;
   anything else is ErpNoAnswer (retried in doubt, so the next attempt looks up first).
5. **Reply** (optional): the answer becomes an envelope derived from the request (type
   ``reply.type``, optionally mapped) published with confirms before ``deliver`` returns. A
   failed publish raises, so the message is retried (the ERP call is repeated; use replies for
   queries, or for postings whose lookup is configured).

``deliver_many`` (the runtime's BatchSink path) sends a worker batch with up to
``concurrency`` calls in flight; while the breaker is not closed it sends one at a time, so a
half-open circuit gets exactly one probe. Replies are published from the calling thread
(publishers are thread-confined).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from connectors.soap_erp.breaker import CircuitBreaker
from connectors.soap_erp.client import Operation, SoapClient
from connectors.soap_erp.config import DocumentNumberConfig, SoapErpSinkConfig
from connectors.soap_erp.elements import check_path
from connectors.soap_erp.faults import ErpNoAnswer, ErpUnavailable
from connectors.soap_erp.metrics import SoapMetrics
from connectors.soap_erp.payload import get_path, set_path
from connectors.soap_erp.stock import ErpStockReader
from integration_bus.connector import (
    ConfigError,
    ConnectorContext,
    Envelope,
    PermanentError,
    Publisher,
    StockReading,
    document_reference,
)

__all__ = ["SoapErpSink", "document_number"]

_DOUBT_MEMORY = 10_000


def document_number(key: str, config: DocumentNumberConfig) -> str:
    """The external document number of an idempotency key (deterministic, ERP-safe text)."""
    return document_reference(key, config.prefix, config.length)


class SoapErpSink:
    """Delivers envelopes to one ERP operation (see the module docstring for the contract);
    also a StockReader (``bus reconcile``, see ``connectors.soap_erp.stock``)."""

    def __init__(self, config: SoapErpSinkConfig, context: ConnectorContext, *,
                 document: Any, breaker: Callable[[str], CircuitBreaker]) -> None:
        self.name = context.instance
        self._config = config
        self._context = context
        self._metrics = SoapMetrics.of(context.metrics.registry)
        try:
            self._client = SoapClient(config, document=document, breaker=breaker,
                                      metrics=self._metrics, resolve=context.resolve,
                                      pool_size=config.concurrency)
        except ConfigError as exc:
            exc.with_context(sink=self.name)
            raise
        self._breaker = self._client.breaker
        try:
            self._op = self._client.operation(config.operation)
            self._lookup_op: Operation | None = None
            if config.lookup is not None:
                self._lookup_op = self._client.operation(config.lookup.operation,
                                                         field="lookup.operation")
            self._check_fields()
            self._request_map = context.load_mapping(config.request_mapping,
                                                     "request_mapping") \
                if config.request_mapping else None
            self._reply_map = context.load_mapping(config.reply.mapping, "reply.mapping") \
                if config.reply is not None and config.reply.mapping else None
        except ConfigError as exc:
            self._client.close()
            exc.with_context(sink=self.name)
            raise
        self._doubt: OrderedDict[str, None] = OrderedDict()
        self._doubt_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._publisher: Publisher | None = None
        self._stock = ErpStockReader(self._client, config.stock, context)

    def _check_fields(self) -> None:
        cfg = self._config
        checks = []
        if cfg.document_number is not None:
            checks.append((self._op, cfg.document_number.field, "document_number.field", True))
            if cfg.document_number.answer is not None:
                checks.append((self._op, cfg.document_number.answer, "document_number.answer",
                               False))
        if cfg.lookup is not None and self._lookup_op is not None:
            checks.append((self._lookup_op, cfg.lookup.reference, "lookup.reference", True))
            checks.append((self._lookup_op, cfg.lookup.found, "lookup.found", False))
        for op, path, field, request in checks:  # to the leaf, against the WSDL's types
            check_path(op.binding_op.input if request else op.binding_op.output, path,
                       operation=op.name, field=field,
                       direction="request" if request else "response")

    # -- one envelope ------------------------------------------------------------------------
    def _request(self, envelope: Envelope) -> tuple[Any, str | None, dict[str, Any]]:
        where: dict[str, Any] = {"sink": self.name, "envelope_id": envelope.id}
        payload = envelope.payload
        if self._request_map is not None:
            outputs = self._request_map(envelope)
            if len(outputs) > 1:
                raise PermanentError(f"the request mapping made {len(outputs)} requests from "
                                     "one envelope; split in the route's pipeline instead",
                                     field="request_mapping", **where)
            payload = outputs[0].payload if outputs else None
        number = None
        numbering = self._config.document_number
        if numbering is not None and payload is not None:
            number = document_number(envelope.idempotency_key, numbering)
            where["document_number"] = number
            if not isinstance(payload, dict):
                raise PermanentError(f"{self._op.name}: the request must be an object",
                                     operation=self._op.name, **where)
            try:
                payload = set_path(payload, numbering.field, number)
            except ValueError as exc:
                raise PermanentError(f"{self._op.name}: cannot set the document number: {exc}",
                                     operation=self._op.name, field=numbering.field,
                                     **where) from None
        return payload, number, where

    def _call(self, envelope: Envelope) -> dict[str, Any] | None:
        """The ERP's answer, or None when nothing was sent (filtered, or found by lookup)."""
        payload, number, where = self._request(envelope)
        if payload is None:
            return None
        maybe_done = number is not None and self._lookup_op is not None and (
            envelope.attempt > 0 or envelope.replay_of is not None or self._doubted(number))
        if maybe_done and number is not None and self._exists(number, where):
            self._forget(number)
            self._context.log.info("soap_erp.recovered", **where, operation=self._op.name)
            return None
        try:
            answer = self._client.call(self._op, payload, **where)
            self._check_document(answer, where)
        except ErpUnavailable as exc:
            if number is not None and exc.context.get("in_doubt"):
                self._doubt_add(number)
            raise
        if number is not None:
            self._forget(number)
        return answer

    def _check_document(self, answer: dict[str, Any], where: dict[str, Any]) -> None:
        """A posting counts only when the answer carries the ERP's document number (where
        ``document_number.answer`` names it); else ErpNoAnswer, in doubt."""
        numbering = self._config.document_number
        if numbering is None or numbering.answer is None:
            return
        if get_path(answer, numbering.answer) in (None, "", [], {}):
            raise ErpNoAnswer(f"{self._op.name}: the answer has no document number at "
                              f"{numbering.answer} (the call may have taken effect)",
                              missing=numbering.answer, in_doubt=True, operation=self._op.name,
                              outcome="no_document_number", **where)

    def deliver(self, envelope: Envelope) -> None:
        answer = self._call(envelope)
        if answer is not None and self._config.reply is not None:
            self._publish([(envelope, answer)])

    def deliver_many(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        """One outcome per envelope, in order; up to ``concurrency`` calls in flight."""
        results: list[tuple[BaseException | None, dict[str, Any] | None]] = []
        index = 0
        while index < len(envelopes) and (self._breaker.state != "closed"
                                          or self._config.concurrency == 1):
            results.append(self._attempt(envelopes[index]))  # a half-open circuit: one probe
            index += 1
        if index < len(envelopes):
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._config.concurrency,
                                                thread_name_prefix=f"soap:{self.name}")
            results += list(self._pool.map(self._attempt, envelopes[index:]))
        outcomes = [error for error, _ in results]
        if self._config.reply is not None:
            done = [(i, envelopes[i], answer) for i, (error, answer) in enumerate(results)
                    if error is None and answer is not None]
            for i, error in self._publish_each(done).items():
                outcomes[i] = error
        return outcomes

    def _attempt(self, envelope: Envelope) -> tuple[BaseException | None, dict[str, Any] | None]:
        try:
            return None, self._call(envelope)
        except Exception as exc:  # an outcome per envelope, as the BatchSink contract says
            return exc, None

    # -- lookup ------------------------------------------------------------------------------
    def lookup(self, envelope: Envelope) -> bool:
        """Did this envelope's posting already happen? Asks the ERP for its document number
        (False when no lookup is configured). Raises like a delivery (transient: retry)."""
        if self._lookup_op is None or self._config.document_number is None:
            return False
        number = document_number(envelope.idempotency_key, self._config.document_number)
        return self._exists(number, {"sink": self.name, "envelope_id": envelope.id,
                                     "document_number": number})

    def _exists(self, number: str, where: dict[str, Any]) -> bool:
        assert self._lookup_op is not None and self._config.lookup is not None
        answer = self._client.call(self._lookup_op,
                                   set_path({}, self._config.lookup.reference, number), **where)
        found = get_path(answer, self._config.lookup.found) not in (None, "", [], {})
        self._metrics.lookups.labels(self._client.endpoint, str(found).lower()).inc()
        return found

    def _doubted(self, number: str) -> bool:
        with self._doubt_lock:
            return number in self._doubt

    def _doubt_add(self, number: str) -> None:
        with self._doubt_lock:
            self._doubt[number] = None
            while len(self._doubt) > _DOUBT_MEMORY:
                self._doubt.popitem(last=False)

    def _forget(self, number: str) -> None:
        with self._doubt_lock:
            self._doubt.pop(number, None)

    def read_stock(self, pairs: Sequence[tuple[str, str]] | None) -> list[StockReading]:
        """StockReader: the ERP's levels of ``pairs`` (one stock query per material, plant)."""
        return self._stock.read(pairs)

    # -- request/reply -------------------------------------------------------------------------
    def _replies(self, envelope: Envelope, answer: dict[str, Any]) -> list[Envelope]:
        assert self._config.reply is not None
        reply = envelope.derive(type=self._config.reply.type, payload=answer, source=self.name)
        return self._reply_map(reply) if self._reply_map is not None else [reply]

    def _publish(self, done: Sequence[tuple[Envelope, dict[str, Any]]]) -> None:
        errors = self._publish_each([(0, envelope, answer) for envelope, answer in done])
        if errors:
            raise next(iter(errors.values()))

    def _publish_each(self, done: Sequence[tuple[int, Envelope, dict[str, Any]]]
                      ) -> dict[int, BaseException]:
        """Publish the replies of ``done`` (index, request, answer) in one confirm window;
        the indexes whose replies failed, with why."""
        failed: dict[int, BaseException] = {}
        batch: list[tuple[int, Envelope]] = []
        for index, envelope, answer in done:
            try:
                batch += [(index, r) for r in self._replies(envelope, answer)]
            except Exception as exc:  # a reply mapping that fails: this envelope's outcome
                failed[index] = exc
        if batch:
            if self._publisher is None:
                self._publisher = self._context.open_publisher()
            outcomes = self._publisher.publish_many([r for _, r in batch])
            for (index, _), outcome in zip(batch, outcomes, strict=True):
                if outcome is not None:
                    failed.setdefault(index, outcome)
        return failed

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None
        self._client.close()
