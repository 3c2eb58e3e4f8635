"""Between concurrent webhook requests and the runtime's read, publish, then ack loop.

:class:`RequestBatches` is the batch half of the webhook source (a ``BatchSource``). Requests
(on the event loop) ``submit`` a :class:`Submission` and wait for its future in the source's
``Inbox``. ``read`` takes everything waiting (up to ``window``) and:

1. asks the seen-keys store once which keys (the receiver's: the signed body's digest and
   topic) it took in before, and marks in-batch repeats (the same body sent twice at once) as
   duplicates of their first copy;
2. hands the runtime the new envelopes as one batch: it publishes them in one window of
   publisher confirms (``run_batch_source``) and then calls the batch's ack;
3. the ack remembers the keys of the confirmed ones (never before the confirm: a key
   remembered for a failed publish would turn the sender's retry into a "duplicate" and lose
   the event), dead-letters at the source what the broker will never take (no route takes it,
   or it cannot travel: answered 200 ``dead_lettered``, its key remembered so a retry is a
   ``duplicate``), fails the rest (the request answers 503, the sender retries), resolves the
   futures, and only then writes the journal rows for duplicates.

A request whose future is still waiting when it gives up (it answers 503) is cancelled: the
inbox skips it, so nothing is published for it. One already taken stays valid: if it is
confirmed after the 503, its keys are remembered and the sender's retry is answered as a
duplicate. An envelope whose publish raises (rather than failing as an outcome) is isolated by
the runtime and dead-lettered after a few tries (``integration_bus.source_batch``), so no body
gets a retryable answer forever.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal

from integration_bus.connector import (
    BusError,
    ConnectorContext,
    Envelope,
    Inbox,
    PermanentError,
    SourceBatch,
    Waiting,
)

__all__ = ["Accepted", "RequestBatches", "Submission"]

#: how long ``read`` waits for a first request before it hands the runtime an empty batch
_READ_WAIT = 0.5

Status = Literal["accepted", "duplicate", "dead_lettered"]


@dataclass(frozen=True)
class Accepted:
    """What a submission came to (the request answers 200 with it)."""

    status: Status
    envelope_id: str | None


@dataclass(frozen=True)
class Submission:
    """One webhook delivery on its way to the broker."""

    envelope: Envelope
    keys: tuple[str, ...]  # seen keys (the signed body's own: a replay finds them)
    raw: bytes  # for the dead-letter store if no route takes it (never logged)
    source_ref: dict[str, Any]


_Waiting = Waiting[Submission, Accepted]


class RequestBatches:
    """A ``BatchSource`` over the requests the receiver submits (see the module doc).
    ``submit`` from any thread; ``read`` from the runtime's. Lifecycle: use, then ``close``."""

    def __init__(self, context: ConnectorContext, *, window: int) -> None:
        self.name = context.instance
        self._context = context
        self._window = window
        self._inbox: Inbox[Submission, Accepted] = Inbox()

    def submit(self, submission: Submission) -> Future[Accepted]:
        return self._inbox.put(submission)

    def read(self, stop: threading.Event) -> SourceBatch:
        """The waiting requests' new envelopes; the ack answers every request taken."""
        batch = self._inbox.take(stop, limit=self._window, wait=_READ_WAIT)
        if not batch:
            return SourceBatch((), _nothing_to_ack)
        try:
            known = self._context.seen.seen([k for w in batch for k in w.item.keys])
        except BusError as exc:  # the store is down: every request answers 503
            for w in batch:
                w.answer.set_exception(exc)
            return SourceBatch((), _nothing_to_ack)
        fresh, repeats, duplicates = _split(batch, known)

        def ack(outcomes: Sequence[BusError | None]) -> None:
            results = self._settle(fresh, outcomes)
            for w, first in repeats:  # the same delivery twice in one batch: share the outcome
                outcome = results[id(first)]
                if isinstance(outcome, BaseException):
                    w.answer.set_exception(outcome)
                else:
                    duplicates.append((w, outcome.envelope_id))
            for w, envelope_id in duplicates:
                if not w.answer.done():
                    w.answer.set_result(Accepted("duplicate", envelope_id))
            self._record_duplicates(duplicates)

        return SourceBatch([w.item.envelope for w in fresh], ack)

    def _settle(self, fresh: Sequence[_Waiting],
                outcomes: Sequence[BusError | None]) -> dict[int, Accepted | BaseException]:
        results: dict[int, Accepted | BaseException] = {}
        remember: list[tuple[str, str | None]] = []
        for w, outcome in zip(fresh, outcomes, strict=True):
            s = w.item
            if outcome is None:
                results[id(w)] = Accepted("accepted", s.envelope.id)
                remember += [(k, s.envelope.id) for k in s.keys]
            elif isinstance(outcome, PermanentError):  # unroutable, or cannot travel
                results[id(w)] = self._dead_letter(s, outcome)
                if not isinstance(results[id(w)], BaseException):
                    remember += [(k, None) for k in s.keys]
            else:  # not taken: the request answers 503 (and logs why), the sender retries
                results[id(w)] = outcome
        if remember:
            self._remember(remember)
        for w in fresh:
            result = results[id(w)]
            if isinstance(result, BaseException):
                w.answer.set_exception(result)
            else:
                w.answer.set_result(result)
        return results

    def _remember(self, items: list[tuple[str, str | None]]) -> None:
        try:
            self._context.seen.remember(items)
        except BusError as exc:  # settled anyway: a retry would be absorbed by the ledger
            self._context.log.warning("webhook.remember_failed", error=str(exc),
                                      count=len(items))

    def _dead_letter(self, s: Submission, error: BusError) -> Accepted | BaseException:
        """No route takes it, or it cannot be published: the delivery goes to the dead-letter
        store with where it came from, not nowhere."""
        try:
            self._context.reject(s.raw, error.with_context(**s.source_ref), s.source_ref)
        except BusError as exc:
            return exc
        return Accepted("dead_lettered", None)

    def _record_duplicates(self, duplicates: Sequence[tuple[_Waiting, str | None]]) -> None:
        for w, envelope_id in duplicates:
            try:
                self._context.rejected("duplicate", "duplicate",
                                       {**w.item.source_ref, "envelope_id": envelope_id})
            except BusError as exc:
                self._context.log.warning("webhook.journal_failed", error=str(exc))

    def close(self) -> None:
        """Waiting requests fail (they answer 503); idempotent."""
        self._inbox.close()


def _nothing_to_ack(outcomes: Sequence[BusError | None]) -> None:
    """The ack of a batch with nothing to publish (its requests are answered already)."""


def _split(batch: Sequence[_Waiting], known: dict[str, str | None]) -> tuple[
        list[_Waiting], list[tuple[_Waiting, _Waiting]], list[tuple[_Waiting, str | None]]]:
    """New deliveries, in-batch repeats of one of them, and repeats of earlier ones."""
    fresh: list[_Waiting] = []
    repeats: list[tuple[_Waiting, _Waiting]] = []
    duplicates: list[tuple[_Waiting, str | None]] = []
    claimed: dict[str, _Waiting] = {}
    for w in batch:
        keys = w.item.keys
        hit = next((k for k in keys if k in known), None)
        if hit is not None:
            duplicates.append((w, known[hit]))
            continue
        first = next((claimed[k] for k in keys if k in claimed), None)
        if first is not None:
            repeats.append((w, first))
            continue
        for key in keys:
            claimed[key] = w
        fresh.append(w)
    return fresh, repeats, duplicates
