"""The publishing bridge between concurrent webhook requests and one thread-confined publisher.

Requests (on the event loop) ``submit`` a :class:`Submission` and wait for its future. One
thread takes everything waiting (up to ``window``), and for that batch:

1. asks the seen-keys store once which delivery / event keys it took in before, and marks
   in-batch repeats (the same delivery sent twice at once) as duplicates of their first copy;
2. publishes the new envelopes in one window of publisher confirms (``publish_many``);
3. remembers the keys of the confirmed ones (never before the confirm: a key remembered for a
   failed publish would turn the sender's retry into a "duplicate" and lose the event);
4. resolves the futures, and only then writes the journal rows for duplicates.

A request whose future is still waiting when it gives up (it answers 503) is cancelled: the
thread skips cancelled submissions it has not started, so nothing is published for them. One
already being published stays valid: if it is confirmed after the 503, its keys are remembered
and the sender's retry is answered as a duplicate.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

from integration_bus.connector import (
    BusError,
    ConnectorContext,
    Envelope,
    Publisher,
    TransientError,
    UnroutableError,
)

__all__ = ["Accepted", "PublishBridge", "Submission"]

Status = Literal["accepted", "duplicate", "dead_lettered"]


@dataclass(frozen=True)
class Accepted:
    """What a submission came to (the request answers 200 with it)."""

    status: Status
    envelope_id: str | None


@dataclass
class Submission:
    """One webhook delivery on its way to the broker."""

    envelope: Envelope
    keys: tuple[str, ...]  # seen keys: delivery key first, then the business event key
    raw: bytes  # for the dead-letter store if no route takes it (never logged)
    source_ref: dict[str, Any]
    future: Future[Accepted] = field(default_factory=Future)


class PublishBridge:
    """Runs the publishing thread; ``submit`` from any thread. Lifecycle: ``start`` → ``close``."""

    def __init__(self, context: ConnectorContext, *, window: int) -> None:
        self._context = context
        self._window = window
        self._queue: queue.SimpleQueue[Submission | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"webhook-publish:"
                                        f"{self._context.instance}", daemon=True)
        self._thread.start()

    def submit(self, submission: Submission) -> Future[Accepted]:
        if self._closed.is_set():
            submission.future.set_exception(TransientError("the receiver is stopping"))
        else:
            self._queue.put(submission)
        return submission.future

    def close(self) -> None:
        """Stop after the batch in flight; waiting submissions fail (their requests get 503)."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(35)  # a publish waits at most 30 s for its confirm

    # -- the publishing thread ---------------------------------------------------------------------
    def _run(self) -> None:
        publisher = self._context.open_publisher()
        try:
            while True:
                batch = self._take()
                if batch is None:
                    break
                if not batch:
                    continue
                try:
                    self._handle(publisher, batch)
                except Exception as exc:  # every request waits on this thread: it must live on
                    self._context.log.error("webhook.bridge_failed",
                                            error=f"{type(exc).__name__}: {exc}")
                    for s in batch:
                        if not s.future.done():
                            s.future.set_exception(TransientError("publishing failed"))
                    publisher.close()
                    publisher = self._context.open_publisher()
        finally:
            publisher.close()
            self._fail_waiting()

    def _take(self) -> list[Submission] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < self._window:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # stop after this batch
                break
            batch.append(item)
        return [s for s in batch if s.future.set_running_or_notify_cancel()]

    def _fail_waiting(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None and item.future.set_running_or_notify_cancel():
                item.future.set_exception(TransientError("the receiver is stopping"))

    def _handle(self, publisher: Publisher, batch: list[Submission]) -> None:
        try:
            known = self._context.seen.seen([k for s in batch for k in s.keys])
        except BusError as exc:
            for s in batch:
                s.future.set_exception(exc)
            return
        fresh, repeats, duplicates = self._split(batch, known)
        outcomes = publisher.publish_many([s.envelope for s in fresh]) if fresh else []
        results = self._settle(fresh, outcomes)
        for s, first in repeats:  # the same delivery twice in one batch: share the outcome
            outcome = results[id(first)]
            if isinstance(outcome, BaseException):
                s.future.set_exception(outcome)
            else:
                s.future.set_result(Accepted("duplicate", outcome.envelope_id))
                duplicates.append((s, outcome.envelope_id))
        self._record_duplicates(duplicates)

    @staticmethod
    def _split(batch: Sequence[Submission], known: dict[str, str | None]) -> tuple[
            list[Submission], list[tuple[Submission, Submission]],
            list[tuple[Submission, str | None]]]:
        fresh: list[Submission] = []
        repeats: list[tuple[Submission, Submission]] = []
        duplicates: list[tuple[Submission, str | None]] = []
        claimed: dict[str, Submission] = {}
        for s in batch:
            hit = next((k for k in s.keys if k in known), None)
            if hit is not None:
                s.future.set_result(Accepted("duplicate", known[hit]))
                duplicates.append((s, known[hit]))
                continue
            first = next((claimed[k] for k in s.keys if k in claimed), None)
            if first is not None:
                repeats.append((s, first))
                continue
            for key in s.keys:
                claimed[key] = s
            fresh.append(s)
        return fresh, repeats, duplicates

    def _settle(self, fresh: Sequence[Submission],
                outcomes: Sequence[BusError | None]) -> dict[int, Accepted | BaseException]:
        results: dict[int, Accepted | BaseException] = {}
        remember: list[tuple[str, str | None]] = []
        for s, outcome in zip(fresh, outcomes, strict=True):
            if outcome is None:
                results[id(s)] = Accepted("accepted", s.envelope.id)
                remember += [(k, s.envelope.id) for k in s.keys]
            elif isinstance(outcome, UnroutableError):
                results[id(s)] = self._dead_letter(s, outcome)
                if not isinstance(results[id(s)], BaseException):
                    remember += [(k, None) for k in s.keys]
            else:
                results[id(s)] = outcome
        if remember:
            try:
                self._context.seen.remember(remember)
            except BusError as exc:  # confirmed anyway: a retry would be absorbed by the ledger
                self._context.log.warning("webhook.remember_failed", error=str(exc),
                                          count=len(remember))
        for s in fresh:
            result = results[id(s)]
            if isinstance(result, BaseException):
                s.future.set_exception(result)
            else:
                s.future.set_result(result)
        return results

    def _dead_letter(self, s: Submission, error: UnroutableError) -> Accepted | BaseException:
        """No route takes this type: the delivery goes to the dead-letter store, not nowhere."""
        try:
            self._context.reject(s.raw, error.with_context(**s.source_ref), s.source_ref)
        except BusError as exc:
            return exc
        return Accepted("dead_lettered", None)

    def _record_duplicates(self, duplicates: Sequence[tuple[Submission, str | None]]) -> None:
        for s, envelope_id in duplicates:
            try:
                self._context.record("duplicate", {**s.source_ref,
                                                   "envelope_id": envelope_id})
            except BusError as exc:
                self._context.log.warning("webhook.journal_failed", error=str(exc))
