"""The order process manager: drives one order's saga to a final state, step by step.

``handle(envelope)`` (the accepted order) loads or starts the order's saga and loops: ask
:func:`~integration_bus.retail.orders.saga.next_step` what to do, do it through
:class:`OrderSystems`, record the result with a compare-and-set save. Each effect is claimed in
the idempotency ledger under the sink that performs it and the step's own key (the ERP's
external reference derives from that key too): after a crash the redelivered order resumes at
the first step the saga had not recorded, and a step whose effect may have happened is sent
again with ``attempt`` > 0 so the sink looks it up first — no second document.

Ends: the saga is final (returns), waits for a person (raises :class:`OrderNeedsDecision`, a
business dead letter listing the options), or cannot go on now (TransientError from a system
or a version conflict: the route retries; past ``policy.wait`` a silent ERP is decided on as
``policy.on_timeout`` says).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from integration_bus.envelope import Envelope
from integration_bus.errors import PermanentError, TransientError
from integration_bus.retail.orders.book import Entry, SagaBook, SagaRecord
from integration_bus.retail.orders.policy import SourcingPolicy
from integration_bus.retail.orders.saga import (
    Atp,
    Saga,
    Step,
    apply,
    next_step,
    recheck,
    timed_out,
)
from integration_bus.store.ledger import Claim, ClaimOutcome

__all__ = ["OrderNeedsDecision", "OrderProcessManager", "OrderSystems", "PendingSave",
           "Started"]

_MAX_STEPS = 500  # a saga of a few lines takes tens of steps; more means a decision loop


class OrderNeedsDecision(PermanentError):
    """The sourcing policy says a person decides (or every option failed): a business dead
    letter in its own group; ``options`` lists the choices (``bus orders decide``)."""


class OrderSystems(Protocol):
    """What the saga's steps do to the systems; each call is idempotent under ``key``.
    ``attempt`` > 0 means the effect may already have happened (look before resending)."""

    def start(self, envelope: Envelope, policy: SourcingPolicy, now: float) -> Saga:
        """A new saga from the accepted order (lines and their reservation keys)."""

    def sink_for(self, kind: str) -> str | None:
        """The sink name a step kind's effect goes through (and is claimed under in the
        ledger); None when none is configured (telling the shop or the customer is optional:
        the step is recorded as skipped)."""

    def key_for(self, envelope: Envelope, saga: Saga, step: Step) -> str:
        """The idempotency key of a step's effect."""

    def perform(self, envelope: Envelope, saga: Saga, step: Step, key: str,
                attempt: int) -> str | None:
        """Do the step's effect: None when done, else why the target refused for short stock
        (only ``reserve``: the ERP's Deficit). Raises TransientError (try later) or
        PermanentError."""

    def close(self) -> None:
        """Release what the effects hold (sinks, connections); idempotent."""


class OrderProcessManager:
    def __init__(self, book: SagaBook, policy: SourcingPolicy, systems: OrderSystems,
                 atp: Atp, *, clock: Callable[[], float] = time.time,
                 on_final: Callable[[SagaRecord], None] | None = None) -> None:
        self.book = book
        self.policy = policy
        self.systems = systems
        self.atp = atp
        self.clock = clock
        self.on_final = on_final

    def handle(self, envelope: Envelope) -> SagaRecord:
        """Drive the order's saga as far as it goes now (see the module doc). Steps without an
        effect are applied in memory and saved with the next effect's claim (or the end), in
        one transaction: they are recomputed the same after a crash."""
        fresh, claims = self.begin(envelope)
        record, claimed = self.book.start_claiming(fresh, claims)
        result = self.resume(envelope, Started(record, claims, claimed))
        assert isinstance(result, SagaRecord)
        return result

    def begin(self, envelope: Envelope) -> tuple[Saga, list[Claim]]:
        """A new saga from the order and the claims of its as-ordered effects (no I/O: a
        worker batch's sagas are then created in one transaction, :meth:`SagaBook.start_many`)."""
        fresh = self.systems.start(envelope, self.policy, self.clock())
        return fresh, self._plan(envelope, fresh)

    def resume(self, envelope: Envelope, started: Started, *,
               defer: bool = False) -> SagaRecord | PendingSave:
        """:meth:`handle` from the stored saga (and the claims made with its creation, when it
        was created now). ``defer``: an order that reaches its end without another save is not
        saved here but handed back as a :class:`PendingSave` (a worker batch's ends are saved
        in one transaction, :meth:`SagaBook.save_many`, and ``on_final`` is then the caller's);
        until it is saved, its effects are in doubt like any effect not yet recorded."""
        run = _Run(started.record, envelope)
        if started.outcomes is not None:  # created now: the as-ordered effects are claimed
            run.preclaimed = {(c.sink, c.key): o
                              for c, o in zip(started.claims, started.outcomes, strict=True)}
        return self._drive(run, defer=defer)

    def _plan(self, envelope: Envelope, saga: Saga) -> list[Claim]:
        """The claims of the effects an order takes when it ships as placed (the sales order,
        each line reserved at the channel's first location), claimed with the saga's creation
        in one transaction: an order that ships as placed is then saved once more, at its
        end. A planned effect that does not come up (a line refused before it) is released at
        the end; one performed and not yet saved is in doubt after a crash, like any other."""
        scratch = Saga.from_json(saga.to_json())
        first = self.policy.locations(saga.channel)[0]
        claims = []
        for _ in range(_MAX_STEPS):
            step = next_step(scratch, self.policy, self.atp, now=self.clock())
            if step.kind in ("decide", "phase"):
                apply(scratch, step, "ok")
                continue
            sink = self.systems.sink_for(step.kind)
            if sink is None or step.kind not in ("sales_order", "reserve") or \
                    (step.kind == "reserve" and step.location != first):
                break
            claims.append(Claim(sink, self.systems.key_for(envelope, scratch, step),
                                f"saga:{saga.order_id}", envelope.id, redelivered=True))
            apply(scratch, step, "ok")
        return claims

    def recheck(self, order_id: str, envelope: Envelope) -> SagaRecord | None:
        """Look at a back-ordered order again (:func:`recheck`: stock arrived, or its back
        order waited too long) and drive it on; a saga left running (a crash, a retry) is
        driven on too. None when there is no such order. ``envelope`` (the recheck message)
        is what the steps' effects derive from; their keys come from the saga's ``refs``."""
        record = self.book.get(order_id)
        if record is None:
            return None
        run = _Run(record, envelope)
        why = recheck(run.saga, self.policy, self.atp, now=self.clock())
        if why is not None:
            run.entries.append(Entry("recheck", f"round {run.saga.round}", why, None))
        elif record.state != "running":
            return record
        result = self._drive(run)
        assert isinstance(result, SagaRecord)
        return result

    def _drive(self, run: _Run, *, defer: bool = False) -> SagaRecord | PendingSave:
        for _ in range(_MAX_STEPS):
            saga = run.saga
            step = next_step(saga, self.policy, self.atp, now=self.clock())
            if step.kind == "finish" and saga.phase == "final":
                if defer and run.entries:
                    self._leftovers(run)
                    return PendingSave(run.record, run.saga, run.entries, run.settle,
                                       run.failed)
                return self._flush(run)
            if step.kind in ("decide", "phase", "finish"):
                apply(saga, step, "ok")
                run.entries.append(Entry(step.kind, step.status or step.kind, step.reason,
                                         _detail(step)))
                continue
            if step.kind == "ask":
                self._ask(run, step)
            self._effect(run, step)
        raise PermanentError(f"order {run.saga.order_id}: the saga did not settle within "
                             f"{_MAX_STEPS} steps", order_id=run.saga.order_id)

    def decide(self, order_id: str, decision: str) -> SagaRecord:
        """A person's choice for a waiting order (see :meth:`SagaBook.decide`)."""
        return self.book.decide(order_id, decision)

    # -- steps -------------------------------------------------------------------------------
    @staticmethod
    def _leftovers(run: _Run) -> None:
        """Claims planned with the saga's creation whose step never came up (a line refused
        before it): claimable again."""
        owner = f"saga:{run.saga.order_id}"
        run.failed += [(sink, key, owner) for (sink, key), outcome in run.preclaimed.items()
                       if outcome is ClaimOutcome.CLAIMED]
        run.preclaimed.clear()

    def _flush(self, run: _Run, claim: Claim | None = None) -> SagaRecord:
        """Save what the run did since its last save (and claim the next effect)."""
        if run.saga.phase in ("final", "waiting"):
            self._leftovers(run)
        if run.entries:
            run.record, run.claimed = self.book.save_steps(
                run.record, run.saga, run.entries, settle=run.settle, failed=run.failed,
                claim=claim)
            run.entries, run.settle, run.failed = [], [], []
            run.saga = run.record.saga  # the working copy goes on (the record keeps its state)
            if run.record.state == "final" and self.on_final is not None:
                self.on_final(run.record)
        elif claim is not None:
            run.claimed = self.book.claim(claim)
        return run.record

    def _ask(self, run: _Run, step: Step) -> None:
        saga = run.saga
        if saga.phase != "waiting":
            apply(saga, step, "ok")
            run.entries.append(Entry("ask", "waiting_for_a_person", step.reason,
                                     _detail(step)))
        self._flush(run)
        asking = run.saga.asking or {}
        options = list(asking.get("options") or [])
        order_id = run.saga.order_id
        raise OrderNeedsDecision(
            f"order {order_id} needs a decision: {asking.get('reason', step.reason)}; "
            f"options: {', '.join(options)}",
            order_id=order_id, line_no=asking.get("line_no"), options=options,
            envelope_id=run.envelope.id,
            hint=f"choose one of {', '.join(options)}: `bus orders decide {order_id} OPTION`, "
                 "then `bus dlq replay` this dead letter")

    def _effect(self, run: _Run, step: Step) -> None:
        saga, envelope = run.saga, run.envelope
        sink = self.systems.sink_for(step.kind)
        if sink is None:
            apply(saga, step, "ok")
            run.entries.append(Entry(step.kind, "skipped", f"{step.reason} (no sink configured)",
                                     _detail(step)))
            return
        key = self.systems.key_for(envelope, saga, step)
        owner = f"saga:{saga.order_id}"
        claim: ClaimOutcome | None = run.preclaimed.pop((sink, key), None)
        if claim is None:  # the claim rides on the save of what came before (one transaction)
            self._flush(run, Claim(sink, key, owner, envelope.id, redelivered=True))
            claim = run.claimed
        saga = run.saga
        if claim is ClaimOutcome.BUSY:
            raise TransientError(f"order {saga.order_id}: {step.kind} {key} is being done by "
                                 "another delivery", order_id=saga.order_id, sink=sink)
        refusal: str | None = None  # DONE: a delivery before this one did it
        if claim is not ClaimOutcome.DONE:
            try:
                refusal = self.systems.perform(envelope, saga, step, key,
                                               attempt=1 if claim is ClaimOutcome.IN_DOUBT else 0)
            except TransientError as exc:
                if step.kind == "reserve" and step.line_no is not None and \
                        self.clock() - saga.started > self.policy.wait / 1000:
                    late = timed_out(saga, step.line_no, self.policy, exc.message)
                    # the reservation may have happened: kept as in doubt, it is released
                    # before anything else (a release of one never made is a NotFound: done)
                    apply(saga, step, "doubt")
                    run.failed.append((sink, key, owner))
                    if late.kind == "ask":
                        self._ask(run, late)
                    apply(saga, late, "ok")
                    run.entries.append(Entry("timeout", "cancelled", late.reason,
                                             _detail(late)))
                    self._flush(run)
                    return
                raise
        done = refusal is None
        apply(saga, step, "ok" if done else "short")
        decision = {"reserve": "reserved" if done else "short"}.get(step.kind, "done")
        run.entries.append(Entry(step.kind, decision, step.reason if done else
                                 f"{step.location}: the ERP refused: {refusal}",
                                 {**_detail(step), "key": key}))
        (run.settle if done else run.failed).append((sink, key, owner))


@dataclass(frozen=True)
class Started:
    """A saga as :meth:`SagaBook.start_claiming` left it: the stored record, the claims asked
    for, and their outcomes (None when the saga existed already: nothing was claimed)."""

    record: SagaRecord
    claims: list[Claim]
    outcomes: list[ClaimOutcome] | None


@dataclass(frozen=True)
class PendingSave:
    """An order's end, to be saved (:meth:`SagaBook.save_many`): what the run did since the
    stored ``record``."""

    record: SagaRecord
    saga: Saga
    entries: list[Entry]
    settle: list[tuple[str, str, str]]
    failed: list[tuple[str, str, str]]


class _Run:
    """One delivery's work on a saga: the last saved record, the working copy, what was done
    since the save, and the outcome of the last claim."""

    def __init__(self, record: SagaRecord, envelope: Envelope) -> None:
        self.record = record
        self.envelope = envelope
        self.saga = Saga.from_json(record.saga.to_json())
        self.entries: list[Entry] = []
        self.settle: list[tuple[str, str, str]] = []
        self.failed: list[tuple[str, str, str]] = []
        self.claimed: ClaimOutcome | None = None
        #: claims made with the saga's creation, used when their step comes up
        self.preclaimed: dict[tuple[str, str], ClaimOutcome] = {}


def _detail(step: Step) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("line_no", "location", "key", "status"):
        value = getattr(step, name)
        if value is not None:
            out[name] = value
    if isinstance(step.quantity, Decimal):
        out["quantity"] = str(step.quantity)
    if step.options:
        out["options"] = list(step.options)
    return out
