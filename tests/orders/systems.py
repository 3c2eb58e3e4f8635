"""The saga's effects done on the fake ERP's state in-process (no HTTP): the decision logic
and the real store are what these tests look at; the over-HTTP path is tests/orders/test_race.

Every call is recorded; ``crash`` makes the next matching call raise :class:`Crash` before or
after its effect (a worker killed at that point), so a test can resume the saga.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from connectors.soap_erp.fakeerp.state import ErpFault, ErpState
from integration_bus.connector import document_reference
from integration_bus.envelope import Envelope
from integration_bus.errors import TransientError
from integration_bus.retail.orders.policy import SourcingPolicy
from integration_bus.retail.orders.saga import Line, Saga, Step

PLANTS = {"WH-01": ("2001", "0100"), "STORE-042": ("1042", "0001"),
          "STORE-107": ("1107", "0001")}


class Crash(BaseException):
    """The worker died here (not an Exception: nothing in the saga may catch it)."""


@dataclass
class ErpSystems:
    erp: ErpState
    calls: list[tuple[str, str]] = field(default_factory=list)
    shop: dict[str, dict[str, object]] = field(default_factory=dict)
    refunds: dict[str, dict[int, str]] = field(default_factory=dict)  # order -> line -> money
    notices: dict[str, dict[str, object]] = field(default_factory=dict)
    crash_at: tuple[str, str] | None = None  # (step kind, "before" | "after")
    silent: set[str] = field(default_factory=set)  # locations whose reservations time out
    shop_sink: bool = True  # False: no shop sink configured (the step is skipped)

    def start(self, envelope: Envelope, policy: SourcingPolicy, now: float) -> Saga:
        lines = envelope.payload["lines"]
        channel = envelope.payload.get("channel", policy.default_channel)
        return Saga(order_id=envelope.payload["order_id"], channel=channel, started=now,
                    lines=[Line(int(ln["line_no"]), ln["sku"], str(ln["quantity"]),
                                f"{envelope.idempotency_key}#{ln['line_no']}",
                                charged=ln.get("charged")) for ln in lines],
                    paid=envelope.payload.get("status") == "paid",
                    refs={"order": envelope.idempotency_key})

    def sink_for(self, kind: str) -> str | None:
        return None if kind == "tell_shop" and not self.shop_sink else f"test_{kind}"

    def key_for(self, envelope: Envelope, saga: Saga, step: Step) -> str:
        if step.kind in ("reserve", "release") and step.key:
            return step.key
        order = saga.refs["order"]
        if step.kind in ("cancel_lines", "shop_cancel"):
            return f"{order}>{step.kind}:{step.key}"
        return f"{order}>{step.kind}" + (f"#{saga.round}" if saga.round else "")

    def close(self) -> None:
        """Nothing held."""

    def _crash(self, kind: str, when: str) -> None:
        if self.crash_at == (kind, when):
            self.crash_at = None
            raise Crash(f"killed {when} {kind}")

    def perform(self, envelope: Envelope, saga: Saga, step: Step, key: str,
                attempt: int) -> str | None:
        self._crash(step.kind, "before")
        self.calls.append((step.kind, key))
        refusal = self._do(envelope, saga, step, key)
        self._crash(step.kind, "after")
        return refusal

    def _do(self, envelope: Envelope, saga: Saga, step: Step, key: str) -> str | None:
        so_ref = f"{saga.refs['order']}>sales_order"
        if step.kind == "sales_order":
            self.erp.create_sales_order(so_ref, Decimal(0), {
                ln.line_no: (ln.sku, "2001", ln.ordered) for ln in saga.lines})
        elif step.kind == "reserve":
            assert step.location is not None and step.quantity is not None
            try:
                self.erp.reserve(key, (saga.line(step.line_no or 0).sku,
                                       *PLANTS[step.location]), step.quantity)
            except ErpFault as fault:
                if fault.subcode == "Deficit":
                    return fault.message
                raise
            if step.location in self.silent:  # made, but the answer never came
                raise TransientError(f"ReserveStock at {step.location}: timed out")
        elif step.kind == "release":
            try:
                self.erp.release(key, key.removesuffix(">release"))
            except ErpFault as fault:
                if fault.subcode != "NotFound":
                    raise
        elif step.kind == "cancel_lines":
            self.erp.cancel_lines(key, so_ref, [int(n) for n in (step.key or "").split(",")])
        elif step.kind == "shop_cancel":  # totals per line: a repeat refunds nothing twice
            told = self.refunds.setdefault(saga.order_id, {})
            for n in (int(x) for x in (step.key or "").split(",")):
                line = saga.line(n)
                told[n] = (line.charged or "0.00") if saga.paid else "0.00"
        elif step.kind == "tell_shop":
            self.shop[saga.order_id] = {ln.sku: ln.status for ln in saga.lines}
        elif step.kind == "notify":
            self.notices.setdefault(key, {"order_id": saga.order_id})
        return None


def reference(key: str) -> str:
    return document_reference(key, "IR", 26)
