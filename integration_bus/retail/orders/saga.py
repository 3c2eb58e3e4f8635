"""An order's saga as data, and the pure decision of its next step.

:class:`Saga` is what the store keeps (``order_sagas.data``, JSON): the order's lines, each with
its allocations (reservations at locations) and the locations tried, plus where the saga is.
:func:`next_step` looks at a saga and the sourcing policy (and what the projection says is
available, for locations not tried yet) and names the one thing to do next; :func:`apply`
records its result. Neither does I/O, so the decisions are tested without any system, and a
saga resumed after a crash takes exactly the step it had not recorded (the effect is idempotent
through its reference).

Steps and their declared reverses (the compensation table):

================  =================================  ========================================
step              effect                              reverse
================  =================================  ========================================
reserve           ERP ReserveStock at a location      release: ERP ReleaseReservation
sales_order       ERP CreateSalesOrder (as ordered)   cancel_lines: ERP CancelSalesOrderLines
(shop order)      the customer's order at the shop    shop_cancel: cancel the lines at the shop,
                                                      refunding what was paid for them
tell_shop         shop: line statuses                 (a later status supersedes it)
notify            ``order.exception`` once a round    (none: a message told)
================  =================================  ========================================

A back-ordered order is final but not closed: :func:`recheck` opens it again (a new
``round``) when the projection shows stock for a back-ordered line, or cancels those lines
when the back order waited past ``back_order.wait``; the saga then runs its steps again and
tells the shop and the customer what changed.

The projection needs no reverse of its own: it follows the ERP's change log, where a release
is a change like a reservation (restocked on the next poll).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from integration_bus.retail.orders.policy import SourcingPolicy

__all__ = ["Allocation", "Line", "Saga", "Step", "apply", "next_step", "outcome_of"]

LineStatus = Literal["open", "sourced", "back_ordered", "cancelled", "asking"]
Phase = Literal["sales_order", "sourcing", "amend", "tell_shop", "notify", "final", "waiting"]
Atp = Callable[[str, str], Decimal | None]

_ZERO = Decimal(0)


@dataclass
class Allocation:
    location: str
    quantity: str  # decimal text
    key: str  # the reservation's idempotency key (the ERP's external reference derives from it)
    state: str = "reserved"  # reserved | released | doubt (a timeout: perhaps made)

    @property
    def units(self) -> Decimal:
        return Decimal(self.quantity)


@dataclass
class Line:
    line_no: int
    sku: str
    quantity: str
    key: str  # the as-ordered reservation's idempotency key
    status: LineStatus = "open"
    allocations: list[Allocation] = field(default_factory=list)
    tried: list[str] = field(default_factory=list)
    reason: str | None = None
    charged: str | None = None  # money the customer was charged for the line (decimal text)

    @property
    def ordered(self) -> Decimal:
        return Decimal(self.quantity)

    def reserved(self) -> Decimal:
        return sum((a.units for a in self.allocations if a.state == "reserved"), _ZERO)

    def remaining(self) -> Decimal:
        return self.ordered - self.reserved()


@dataclass
class Saga:
    order_id: str
    channel: str
    started: float  # epoch seconds (the deadline for waiting on the ERP counts from here)
    lines: list[Line]
    phase: Phase = "sales_order"
    outcome: str | None = None
    asking: dict[str, Any] | None = None  # {line_no, reason, options} while a person decides
    sales_order: bool = False
    cancelled_lines: list[int] = field(default_factory=list)  # cancelled on the sales order
    shop_told: bool = False
    notified: bool = False
    paid: bool = False  # the customer has paid: a line cancelled at the shop is refunded
    currency: str | None = None
    shop_cancelled: list[int] = field(default_factory=list)  # cancelled (refunded) at the shop
    round: int = 0  # 1, 2, ...: a back-ordered order opened again (:func:`recheck`)
    told: str | None = None  # the outcome the customer was last told
    refs: dict[str, str] = field(default_factory=dict)  # order / sales_order idempotency keys
    customer: dict[str, Any] | None = None  # as the order named them (for a later notice)

    def to_json(self) -> dict[str, Any]:
        # by hand: dataclasses.asdict deep-copies recursively and costs more than the save
        return {"order_id": self.order_id, "channel": self.channel, "started": self.started,
                "lines": [{"line_no": ln.line_no, "sku": ln.sku, "quantity": ln.quantity,
                           "key": ln.key, "status": ln.status, "tried": list(ln.tried),
                           "reason": ln.reason, "charged": ln.charged,
                           "allocations": [{"location": a.location, "quantity": a.quantity,
                                            "key": a.key, "state": a.state}
                                           for a in ln.allocations]} for ln in self.lines],
                "phase": self.phase, "outcome": self.outcome,
                "asking": dict(self.asking) if self.asking is not None else None,
                "sales_order": self.sales_order, "cancelled_lines": list(self.cancelled_lines),
                "shop_told": self.shop_told, "notified": self.notified, "paid": self.paid,
                "currency": self.currency, "shop_cancelled": list(self.shop_cancelled),
                "round": self.round, "told": self.told, "refs": dict(self.refs),
                "customer": dict(self.customer) if self.customer is not None else None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Saga:
        lines = [Line(**{**ln, "allocations": [Allocation(**a) for a in ln["allocations"]]})
                 for ln in data["lines"]]
        return cls(**{**data, "lines": lines})

    def line(self, line_no: int) -> Line:
        return next(ln for ln in self.lines if ln.line_no == line_no)

    def locations_used(self) -> set[str]:
        return {a.location for ln in self.lines for a in ln.allocations if a.state == "reserved"}


@dataclass(frozen=True)
class Step:
    """What to do next. ``kind``: reserve, release, decide (a state change, no effect),
    sales_order, cancel_lines, tell_shop, notify, ask, finish."""

    kind: str
    line_no: int | None = None
    location: str | None = None
    quantity: Decimal | None = None
    key: str | None = None
    status: str | None = None
    reason: str = ""
    options: tuple[str, ...] = ()


def _first(policy: SourcingPolicy, saga: Saga) -> str:
    return policy.locations(saga.channel)[0]


def _candidate(saga: Saga, line: Line, policy: SourcingPolicy,
               atp: Atp) -> tuple[str, Decimal, str] | tuple[None, None, str]:
    """The next location to try for ``line`` and how many units; else why there is none."""
    used = saga.locations_used()
    reasons = []
    for index, location in enumerate(policy.locations(saga.channel)):
        if location in line.tried or any(a.location == location and a.state == "reserved"
                                         for a in line.allocations):
            continue
        if location not in used and len(used) >= policy.max_split:
            reasons.append(f"{location}: would ship from more than {policy.max_split} locations")
            continue
        if index == 0:  # the gate promised from here: the ERP decides
            return location, line.remaining(), "as ordered"
        available = atp(line.sku, location)
        if available is not None and available <= _ZERO:
            reasons.append(f"{location}: none available to promise")
            continue
        quantity = line.remaining() if available is None else min(available, line.remaining())
        return location, quantity, f"re-sourced: {location} has {available} available to promise"
    return None, None, "; ".join(reasons) or "every location in the policy was tried"


def next_step(saga: Saga, policy: SourcingPolicy, atp: Atp, *, now: float) -> Step:
    """The one thing to do next for ``saga`` (pure)."""
    if saga.phase in ("final", "waiting"):
        return Step("finish" if saga.phase == "final" else "ask", reason=saga.outcome or "")
    if saga.phase == "sales_order":
        if not saga.sales_order:
            return Step("sales_order", reason="the order as placed (lines are amended if "
                                              "they cannot ship)")
        return Step("phase", status="sourcing", reason="sales order placed")
    if saga.phase == "sourcing":
        for line in saga.lines:  # a reservation a timeout left in doubt: undone first
            for alloc in line.allocations:
                if alloc.state == "doubt":
                    return Step("release", line.line_no, alloc.location, alloc.units,
                                f"{alloc.key}>release", reason="the ERP did not answer the "
                                "reservation in time: release it in case it was made")
        for line in saga.lines:
            if line.status != "open":
                continue
            if line.remaining() <= _ZERO:
                return Step("decide", line.line_no, status="sourced", reason="reserved")
            location, quantity, why = _candidate(saga, line, policy, atp)
            if location is not None and quantity is not None:
                key = line.key if location == _first(policy, saga) else \
                    f"{line.key}@{location}"
                if saga.round:  # opened again: a new reference (the first try's was refused)
                    key = f"{key}~{saga.round}"
                if any(a.key == key for a in line.allocations):
                    key = f"{key}+{len(line.allocations)}"
                return Step("reserve", line.line_no, location, quantity, key, reason=why)
            return _short(saga, line, policy, why)
        if policy.partial == "cancel_order" and any(ln.status == "cancelled"
                                                    for ln in saga.lines):
            for line in saga.lines:
                if line.status != "cancelled":
                    return Step("decide", line.line_no, status="cancelled",
                                reason="another line of the order was cancelled "
                                       "(policy: partial=cancel_order)")
        for line in saga.lines:  # a cancelled line holds no stock: the reverse of reserve
            if line.status != "cancelled":
                continue
            for alloc in line.allocations:
                if alloc.state == "reserved":
                    return Step("release", line.line_no, alloc.location, alloc.units,
                                f"{alloc.key}>release",
                                reason=f"line {line.line_no} cancelled: release what it "
                                       f"holds at {alloc.location}")
        return Step("phase", status="amend", reason="every line decided")
    if saga.phase == "amend":
        cut = [ln.line_no for ln in saga.lines
               if ln.status == "cancelled" and ln.line_no not in saga.cancelled_lines]
        if cut and saga.sales_order:  # the reverse of the sales order, line by line
            return Step("cancel_lines", key=",".join(map(str, cut)),
                        reason=f"cancel line(s) {', '.join(map(str, cut))} on the sales order")
        cut = [ln.line_no for ln in saga.lines
               if ln.status == "cancelled" and ln.line_no not in saga.shop_cancelled]
        if cut:  # the reverse of the customer's order at the shop: cancel, refund if paid
            return Step("shop_cancel", key=",".join(map(str, cut)),
                        reason=f"cancel line(s) {', '.join(map(str, cut))} at the shop"
                               + (" and refund them" if saga.paid else ""))
        return Step("phase", status="tell_shop", reason="sales order matches the decisions")
    outcome = outcome_of(saga, policy)
    if saga.phase == "tell_shop":
        if not saga.shop_told and (saga.round or _exceptions(saga, policy)):
            return Step("tell_shop", reason="lines that are not fulfilled as ordered"
                        if not saga.round else "what became of the back-ordered lines")
        return Step("phase", status="notify", reason="shop up to date")
    if not saga.notified and outcome != (saga.told or "fulfilled"):
        return Step("notify", status=outcome, reason="the customer is told once"
                    if not saga.round else f"the order is now {outcome.replace('_', ' ')}")
    first = _first(policy, saga)
    notes = [f"line {ln.line_no} {ln.sku}: " + (
        ln.status.replace("_", "-") if ln.status != "sourced" else "from " + ", ".join(
            f"{a.location}" for a in ln.allocations if a.state == "reserved"))
        for ln in saga.lines if ln.status != "sourced" or any(
            a.location != first for a in ln.allocations if a.state == "reserved")]
    return Step("finish", status=outcome, reason=f"order {outcome.replace('_', ' ')}"
                + (f" ({'; '.join(notes)})" if notes else ""))


def _short(saga: Saga, line: Line, policy: SourcingPolicy, why: str) -> Step:
    """No location can ship the rest of ``line``: back-order, cancel or ask, per policy."""
    rest = line.remaining()
    if policy.back_order.allows(line.sku):
        return Step("decide", line.line_no, quantity=rest, status="back_ordered",
                    reason=f"{rest} short ({why}); back orders allowed for {line.sku}")
    if policy.otherwise == "ask":
        return Step("ask", line.line_no, quantity=rest,
                    reason=f"{rest} of {line.sku} short ({why}); policy says ask",
                    options=("back_order", "cancel_line", "cancel_order"))
    return Step("decide", line.line_no, quantity=rest, status="cancelled",
                reason=f"{rest} short ({why}); no back orders for {line.sku}")


def timed_out(saga: Saga, line_no: int, policy: SourcingPolicy, error: str) -> Step:
    """The ERP stayed silent past ``policy.wait``: decide as ``on_timeout`` says."""
    reason = f"the ERP did not answer within {policy.wait / 1000:g} s: {error}"
    if policy.on_timeout == "ask":
        return Step("ask", line_no, reason=reason,
                    options=("back_order", "cancel_line", "cancel_order"))
    return Step("decide", line_no, status="cancelled", reason=reason)


def _exceptions(saga: Saga, policy: SourcingPolicy) -> bool:
    return outcome_of(saga, policy) != "fulfilled"


def outcome_of(saga: Saga, policy: SourcingPolicy) -> str:
    """fulfilled, re_sourced, partly_back_ordered (a line still waits for stock, whatever
    became of the others), partly_cancelled or cancelled."""
    statuses = [ln.status for ln in saga.lines]
    if all(s == "cancelled" for s in statuses):
        return "cancelled"
    if "back_ordered" in statuses:  # before partly_cancelled: the order is still open
        return "partly_back_ordered"
    if "cancelled" in statuses:
        return "partly_cancelled"
    first = _first(policy, saga)
    if any(a.location != first for ln in saga.lines for a in ln.allocations
           if a.state == "reserved"):
        return "re_sourced"
    return "fulfilled"


def apply(saga: Saga, step: Step, result: str) -> None:
    """Record the result of ``step``: ``ok``, ``short`` (the ERP refused: Deficit) or, for
    ``decide``/``phase``/``finish``/``ask``, ``ok``."""
    line = saga.line(step.line_no) if step.line_no is not None else None
    if step.kind == "reserve" and line is not None:
        assert step.location is not None and step.key is not None and step.quantity is not None
        if result in ("ok", "doubt"):
            line.allocations.append(Allocation(step.location, str(step.quantity), step.key,
                                               "reserved" if result == "ok" else "doubt"))
        else:
            line.tried.append(step.location)
        return
    if step.kind == "release" and line is not None:
        for alloc in line.allocations:
            if f"{alloc.key}>release" == step.key:
                alloc.state = "released"
        return
    if step.kind == "decide" and line is not None:
        line.status = step.status  # type: ignore[assignment]
        line.reason = step.reason
        return
    if step.kind == "ask":
        saga.phase = "waiting"
        saga.asking = {"line_no": step.line_no, "reason": step.reason,
                       "options": list(step.options)}
        if line is not None:
            line.status = "asking"
        return
    if step.kind == "phase":
        saga.phase = step.status  # type: ignore[assignment]
    elif step.kind == "sales_order":
        saga.sales_order = True
    elif step.kind == "cancel_lines" and step.key:
        saga.cancelled_lines.extend(int(n) for n in step.key.split(","))
    elif step.kind == "shop_cancel" and step.key:
        saga.shop_cancelled.extend(int(n) for n in step.key.split(","))
    elif step.kind == "tell_shop":
        saga.shop_told = True
    elif step.kind == "notify":
        saga.notified = True
        saga.told = step.status
    elif step.kind == "finish":
        saga.phase = "final"
        saga.outcome = step.status


def recheck(saga: Saga, policy: SourcingPolicy, atp: Atp, *, now: float) -> str | None:
    """Open a back-ordered final saga again (a new round) and say why; None when there is
    nothing to do yet. Past ``back_order.wait`` (from the order's start) the back-ordered lines
    are cancelled; before it, the lines whose SKU the projection shows available at one of the
    channel's locations are opened to be sourced again, in policy order."""
    if saga.phase != "final":
        return None
    back = [ln for ln in saga.lines if ln.status == "back_ordered"]
    if not back:
        return None
    if now >= saga.started + policy.back_order.wait_seconds():
        reason = (f"the back order waited {policy.back_order.wait_seconds():g} s for stock "
                  "(back_order.wait): cancelled")
        for line in back:
            line.status, line.reason = "cancelled", reason
    else:
        ready = [(ln, loc) for ln in back for loc in policy.locations(saga.channel)
                 if (atp(ln.sku, loc) or _ZERO) > _ZERO]
        if not ready:
            return None
        opened = {ln.line_no for ln, _ in ready}
        reason = "stock arrived: " + ", ".join(
            f"{ln.sku} at {loc}" for ln, loc in ready) + "; source the back order again"
        for line in back:
            if line.line_no in opened:
                line.status, line.tried, line.reason = "open", [], reason
    saga.round += 1
    saga.phase, saga.outcome = "sourcing", None
    saga.shop_told = saga.notified = False
    return reason


def decide_for_person(saga: Saga, decision: str) -> str:
    """A person chose ``decision`` for a waiting saga: the saga continues from there. Returns
    the reason recorded; ValueError for a choice that is not one of the options."""
    if saga.phase != "waiting" or saga.asking is None:
        raise ValueError("the order is not waiting for a decision")
    options = saga.asking.get("options") or []
    if decision not in options:
        raise ValueError(f"decision {decision!r} is not one of {', '.join(options)}")
    line_no = saga.asking.get("line_no")
    saga.phase, saga.asking = "sourcing", None
    reason = f"a person chose {decision}"
    for line in saga.lines:
        if line.status != "asking" and line.line_no != line_no:
            continue
        if decision == "back_order":
            line.status, line.reason = "back_ordered", reason
        else:
            line.status, line.reason = "cancelled", reason
    if decision == "cancel_order":
        for line in saga.lines:
            if line.status in ("open", "sourced", "back_ordered"):
                line.status, line.reason = "cancelled", reason
    return reason
