"""``availability`` sink: lets an order through only when every line can be promised.

The gate of the web order flow (docs/scenario.md, flow 2). For each order it reads available to
promise (on hand - reserved - safety stock, from the bus's stock projection) of every line's SKU
at the fulfilment location. When all lines fit, the order is published again as ``type`` (e.g.
``order.accepted``), derived from the delivered one, for the routes that reserve and post it in
the ERP. When one does not fit, the delivery fails with :class:`StockShort`, a permanent error:
the order becomes a *business dead letter* naming every short line (visible in
``bus dlq groups`` as one group per route), never a silent oversell. A SKU the projection has
no level for counts as short (``unknown: short``) or is let through for the ERP to decide
(``unknown: pass``).

Orders of one worker batch are checked in order against what the earlier ones left. An
acceptance is recorded (the connector's seen keys) before the order is published, so a retry
after a lost confirm or a crash publishes it again rather than checking stock that by then holds
the order's own reservation. The gate checks the projection, which follows the ERP with the
poll's delay; two orders in different batches close together can both pass for the last unit.
The ERP's reservation is the final word: its ``Deficit`` fault is a business fault too, and
dead-letters the reservation.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import Field

from connectors.bus import BusSink, BusSinkConfig
from integration_bus.connector import (
    ConnectorContext,
    ConnectorPlugin,
    Envelope,
    PermanentError,
    TransientError,
)

__all__ = ["AvailabilityGate", "AvailabilityGateConfig", "StockShort", "plugin"]

_ACCEPTED = "accepted:"  # seen-keys prefix: orders this gate let through


class StockShort(PermanentError):
    """An order asks for more than is available to promise (a business dead letter)."""


class AvailabilityGateConfig(BusSinkConfig):
    """``type`` and ``schema``: what an order that fits is published as (as the ``bus`` sink)."""

    location: str = Field(min_length=1, description="the location orders are fulfilled from")
    lines: str = Field("lines", description="payload field holding the order lines")
    sku: str = Field("sku", description="line field holding the SKU")
    quantity: str = Field("quantity", description="line field holding the ordered quantity")
    unknown: Literal["short", "pass"] = Field(
        "short", description="a SKU without a stock level: short (dead letter) or pass")


class AvailabilityGate:
    def __init__(self, config: AvailabilityGateConfig, context: ConnectorContext) -> None:
        self.name = context.instance
        self._config = config
        self._context = context
        self._forward = BusSink(config, context)  # publishes the orders that fit

    def deliver(self, envelope: Envelope) -> None:
        (outcome,) = self.deliver_many([envelope])
        if outcome is not None:
            raise outcome

    def deliver_many(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        """Check a worker batch with one read of the projection, publish the orders that fit
        in one confirm window."""
        outcomes: list[BaseException | None] = [None] * len(envelopes)
        wanted: list[list[tuple[str, Decimal]]] = []
        for index, envelope in enumerate(envelopes):
            try:
                wanted.append(self._demand(envelope))
            except PermanentError as exc:
                outcomes[index] = exc
                wanted.append([])
        location = self._config.location
        pairs = sorted({(sku, location) for lines in wanted for sku, _ in lines})
        try:
            atp = self._context.stock.available_to_promise(pairs)
        except Exception as exc:  # the store is down: the order waits, it is not refused
            error = TransientError(f"cannot read available to promise: {exc}", sink=self.name)
            return [outcome or error for outcome in outcomes]
        accepted: list[int] = []
        newly: dict[str, str | None] = {}  # acceptance key -> envelope id, decided now
        left = dict(atp)  # what later orders of this batch can still be promised
        try:
            before = self._context.seen.seen(
                [_ACCEPTED + e.idempotency_key for e in envelopes])
            for index, (envelope, lines) in enumerate(zip(envelopes, wanted, strict=True)):
                key = _ACCEPTED + envelope.idempotency_key
                if outcomes[index] is not None:
                    continue
                if before.get(key) is not None or key in newly:
                    accepted.append(index)  # decided on an earlier attempt: publish again
                    continue
                short = self._short_lines(lines, left)
                if short:
                    outcomes[index] = self._refusal(envelope, short)
                    continue
                for sku, quantity in lines:
                    if left.get((sku, location)) is not None:
                        left[(sku, location)] -= quantity  # type: ignore[operator]
                newly[key] = envelope.id
                accepted.append(index)
            # Sticky before publishing: a retry (a lost confirm, a crash) publishes the same
            # acceptance again instead of checking stock that by then holds this order's own
            # reservation. The published copy has the same key: the next routes' ledger takes
            # a repeat as a duplicate. (Seen keys are purged with the journal's retention.)
            if newly:
                self._context.seen.remember(list(newly.items()))
        except Exception as exc:  # the store failed: nothing is decided, all wait
            error = TransientError(f"cannot record the acceptance: {exc}", sink=self.name)
            return [outcome if outcome is not None else error for outcome in outcomes]
        if accepted:
            published = self._forward.deliver_many([envelopes[i] for i in accepted])
            for index, failure in zip(accepted, published, strict=True):
                outcomes[index] = failure
        return outcomes

    def close(self) -> None:
        self._forward.close()

    # -- helpers --------------------------------------------------------------------------------
    def _demand(self, envelope: Envelope) -> list[tuple[str, Decimal]]:
        """(sku, total quantity) per SKU of the order, in first-seen order."""
        cfg = self._config
        payload = envelope.payload
        lines = payload.get(cfg.lines) if isinstance(payload, dict) else None
        if not isinstance(lines, list) or not lines:
            raise PermanentError(f"the order has no {cfg.lines!r} list", field=cfg.lines,
                                 envelope_id=envelope.id, sink=self.name)
        demand: dict[str, Decimal] = {}
        for number, line in enumerate(lines):
            where = f"{cfg.lines}[{number}]"
            sku = line.get(cfg.sku) if isinstance(line, dict) else None
            if not isinstance(sku, str) or not sku:
                raise PermanentError("an order line without a SKU", field=f"{where}.{cfg.sku}",
                                     envelope_id=envelope.id, sink=self.name)
            quantity = _quantity(line.get(cfg.quantity))
            if quantity is None:
                raise PermanentError("an order line quantity must be a positive number",
                                     field=f"{where}.{cfg.quantity}", envelope_id=envelope.id,
                                     sink=self.name)
            demand[sku] = demand.get(sku, Decimal(0)) + quantity
        return list(demand.items())

    def _short_lines(self, lines: list[tuple[str, Decimal]],
                     atp: dict[tuple[str, str], Decimal | None]) -> list[dict[str, Any]]:
        short = []
        for sku, quantity in lines:
            available = atp.get((sku, self._config.location))
            if available is None and self._config.unknown == "pass":
                continue
            if available is None or available < quantity:
                short.append({"sku": sku, "ordered": str(quantity),
                              "available": None if available is None else str(available)})
        return short

    def _refusal(self, envelope: Envelope, short: list[dict[str, Any]]) -> StockShort:
        location = self._config.location
        parts = [f"'{line['sku']}' {line['ordered']} ordered, "
                 + ("no stock level" if line["available"] is None
                    else f"{line['available']} available to promise") for line in short]
        order = envelope.payload.get("order_id") if isinstance(envelope.payload, dict) else None
        return StockShort(f"short stock at '{location}': " + "; ".join(parts),
                          envelope_id=envelope.id, sink=self.name, order_id=order,
                          location=location, short_lines=short,
                          hint="replenish or cancel the order, then `bus dlq replay` it "
                               "(the gate checks again) or `bus dlq discard` it")


def _quantity(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        return None
    try:
        quantity = Decimal(value)
    except InvalidOperation:
        return None
    return quantity if quantity.is_finite() and quantity > 0 else None


plugin = ConnectorPlugin(
    name="availability",
    summary="sink: passes an order on (as a new type) only when every line is available to "
            "promise at a location; a short order is a business dead letter",
    sink_config=AvailabilityGateConfig,
    create_sink=AvailabilityGate,
)
