"""The publishing bridge between concurrent webhook requests and one thread-confined publisher.

Requests (on the event loop) ``submit`` a :class:`Submission` and wait for its future. One
thread takes everything waiting (up to ``window``), and for that batch:

1. asks the seen-keys store once which keys (the receiver's: the signed body's digest and
   topic) it took in before, and marks in-batch repeats (the same body sent twice at once) as
   duplicates of their first copy;
2. publishes the new envelopes in one window of publisher confirms (``publish_many``);
3. remembers the keys of the confirmed ones (never before the confirm: a key remembered for a
   failed publish would turn the sender's retry into a "duplicate" and lose the event);
4. resolves the futures, and only then writes the journal rows for duplicates.

A request whose future is still waiting when it gives up (it answers 503) is cancelled: the
thread skips cancelled submissions it has not started, so nothing is published for them. One
already being published stays valid: if it is confirmed after the 503, its keys are remembered
and the sender's retry is answered as a duplicate.

Each submission is settled on its own. If publishing a batch fails as a whole (an exception,
not a per-message outcome), the thread opens a new publisher and publishes the batch's
submissions one at a time: the healthy ones go through, and one that fails alone — an envelope
that cannot be encoded, say — is dead-lettered with the reason (answered 200
``dead_lettered``, its key remembered so a retry is a ``duplicate``). A failure of a kind that
is not obviously the input's earns a 503, but at most ``STRIKES`` times for the same body:
no input gets a retryable answer forever.
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

from integration_bus.connector import (
    BusError,
    ConnectorContext,
    Envelope,
    PermanentError,
    Publisher,
    TransientError,
)

__all__ = ["Accepted", "PublishBridge", "Submission", "Unpublishable"]

STRIKES = 3  # failures alone after which a body is dead-lettered whatever the error
_INPUT_ERRORS = (TypeError, ValueError, OverflowError, RecursionError)  # encoding the input
_REMEMBERED_STRIKES = 10_000


class Unpublishable(PermanentError):
    """A delivery that failed to publish on its own, on a fresh publisher: dead-lettered."""

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
    keys: tuple[str, ...]  # seen keys (the signed body's own: a replay finds them)
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
        self._strikes: OrderedDict[str, int] = OrderedDict()  # body key -> failures alone

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
                    self._context.log.warning("webhook.batch_failed", size=len(batch),
                                              error=f"{type(exc).__name__}: {exc}")
                    publisher = self._renew(publisher)
                    publisher = self._one_by_one(publisher, batch)
        finally:
            publisher.close()
            self._fail_waiting()

    def _renew(self, publisher: Publisher) -> Publisher:
        try:
            publisher.close()
        except Exception as exc:  # a broken publisher may fail to close: a new one is needed
            self._context.log.warning("webhook.publisher_close_failed", error=str(exc))
        return self._context.open_publisher()

    def _one_by_one(self, publisher: Publisher, batch: list[Submission]) -> Publisher:
        """Publish each unsettled submission of a failed batch alone (see the module doc)."""
        for s in batch:
            if s.future.done():
                continue
            try:
                self._handle(publisher, [s])
            except Exception as exc:
                publisher = self._renew(publisher)
                self._settle_failed(s, exc)
        return publisher

    def _settle_failed(self, s: Submission, exc: Exception) -> None:
        key = s.keys[0]
        strikes = self._strikes.pop(key, 0) + 1
        if isinstance(exc, _INPUT_ERRORS) or strikes >= STRIKES:
            error = Unpublishable(f"cannot be published: {type(exc).__name__}: {exc}"[:500],
                                  attempts=strikes)
            result = self._dead_letter(s, error)
            if isinstance(result, BaseException):
                s.future.set_exception(result)
                return
            self._remember([(k, None) for k in s.keys])
            s.future.set_result(result)
            return
        self._strikes[key] = strikes
        while len(self._strikes) > _REMEMBERED_STRIKES:
            self._strikes.popitem(last=False)
        self._context.log.warning("webhook.not_published_alone", strikes=strikes,
                                  error=f"{type(exc).__name__}: {exc}", **s.source_ref)
        s.future.set_exception(TransientError("publishing failed"))

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
            elif isinstance(outcome, PermanentError):  # unroutable, or refused for good
                results[id(s)] = self._dead_letter(s, outcome)
                if not isinstance(results[id(s)], BaseException):
                    remember += [(k, None) for k in s.keys]
            else:
                results[id(s)] = outcome
        if remember:
            self._remember(remember)
        for s in fresh:
            result = results[id(s)]
            if isinstance(result, BaseException):
                s.future.set_exception(result)
            else:
                s.future.set_result(result)
        return results

    def _remember(self, items: list[tuple[str, str | None]]) -> None:
        try:
            self._context.seen.remember(items)
        except BusError as exc:  # settled anyway: a retry would be absorbed by the ledger
            self._context.log.warning("webhook.remember_failed", error=str(exc),
                                      count=len(items))

    def _dead_letter(self, s: Submission, error: BusError) -> Accepted | BaseException:
        """No route takes it, or it cannot be published: the delivery goes to the dead-letter
        store, not nowhere."""
        try:
            self._context.reject(s.raw, error.with_context(**s.source_ref), s.source_ref)
        except BusError as exc:
            return exc
        return Accepted("dead_lettered", None)

    def _record_duplicates(self, duplicates: Sequence[tuple[Submission, str | None]]) -> None:
        for s, envelope_id in duplicates:
            try:
                self._context.rejected("duplicate", "duplicate",
                                       {**s.source_ref, "envelope_id": envelope_id})
            except BusError as exc:
                self._context.log.warning("webhook.journal_failed", error=str(exc))
