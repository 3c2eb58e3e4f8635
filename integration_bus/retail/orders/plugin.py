"""``order_saga`` sink: hands each accepted order to the order process manager.

The manager's effects go through other sink instances of the same config, by name — the ERP
reservation and sales-order sinks the scenario already has, a release and a sales-order change
sink, the shop's ``order_lines`` sink, and a ``bus`` sink that publishes ``order.exception`` —
each claimed in the idempotency ledger under that sink's name and the step's key. The as-ordered
reservations and the sales order are built by the scenario's own mappings
(``order_to_reservations``, ``order_to_sales_order``), so an order that ships as placed makes
exactly the ERP requests it made before the saga existed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from integration_bus.connector import (
    ConfigError,
    ConnectorContext,
    ConnectorPlugin,
    Envelope,
    PermanentError,
    Sink,
    document_reference,
)
from integration_bus.retail.orders.book import SagaRecord
from integration_bus.retail.orders.lanes import Lanes
from integration_bus.retail.orders.manager import (
    OrderNeedsDecision,
    OrderProcessManager,
    PendingSave,
    Started,
)
from integration_bus.retail.orders.metrics import OrderMetrics
from integration_bus.retail.orders.policy import SourcingPolicy
from integration_bus.retail.orders.rechecks import (
    RECHECK_TYPE,
    OrderRecheckConfig,
    OrderRecheckSource,
)
from integration_bus.retail.orders.saga import Line, Saga, Step

__all__ = ["OrderSagaConfig", "OrderSagaSink", "SinkSystems", "plugin"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Numbering(_Model):
    prefix: str = Field(max_length=8)
    length: int = Field(26, ge=8, le=40)


class ErpStep(_Model):
    sink: str = Field(description="the sink instance that performs it")
    mapping: str | None = Field(None, description="mapping that builds the request from the "
                                                  "accepted order")
    numbering: Numbering | None = Field(None, description="the sink's document_number (the "
                                                          "reverse step names the document)")


class OrderSagaConfig(_Model):
    reservations: ErpStep
    sales_order: ErpStep
    releases: str = Field(description="sink: ERP ReleaseReservation")
    sales_changes: str = Field(description="sink: ERP CancelSalesOrderLines")
    shop_lines: str | None = Field(None, description="sink: rest_shop action order_lines")
    shop_cancels: str | None = Field(None, description="sink: rest_shop action cancel_lines "
                                                       "(cancel and refund lines at the shop)")
    notify: str | None = Field(None, description="sink: publishes order.exception")
    locations: str = Field("location", description="xref table: location -> erp_plant, "
                                                   "storage_location")
    short_fault: str = Field("Deficit", description="regex: an ERP refusal that means short "
                                                    "stock (re-source the line)")
    shop_order_prefix: str = Field("shopify-", description="cut from order_id for the shop")
    shop_skus: str | None = Field(None, description="xref table: SKU -> the shop's SKU (first "
                                                    "value column), for the shop's lines")
    concurrency: int = Field(4, ge=1, le=32, description="orders of a worker batch worked on "
                                                         "at once (each lane its own sinks)")
    policy: SourcingPolicy

    def sinks_used(self) -> list[tuple[str, str]]:
        """(field, sink name) of every sink this one delivers through (``bus lint``)."""
        out = [("reservations.sink", self.reservations.sink),
               ("sales_order.sink", self.sales_order.sink), ("releases", self.releases),
               ("sales_changes", self.sales_changes)]
        out += [(f, n) for f, n in (("shop_lines", self.shop_lines),
                                    ("shop_cancels", self.shop_cancels), ("notify", self.notify))
                if n is not None]
        return out


class SinkSystems:
    """The saga's effects through the configured sinks (OrderSystems)."""

    def __init__(self, config: OrderSagaConfig, context: ConnectorContext) -> None:
        from integration_bus.mapping import load_mapping

        self._config = config
        self._context = context
        self._short = re.compile(config.short_fault)
        table = context.xref(config.locations, field="locations")
        try:
            self._plant = table.column("erp_plant")
            self._storage = table.column("storage_location")
        except KeyError as exc:
            raise ConfigError(f"xref table {config.locations!r} has no column {exc}",
                              field="locations") from None
        self._shop_sku: Any = {}
        if config.shop_skus:
            self._shop_sku = context.xref(config.shop_skus, field="shop_skus").column(None)
        self._maps = {}
        for name, step in (("reservations", config.reservations),
                           ("sales_order", config.sales_order)):
            if step.mapping:
                try:
                    self._maps[name] = load_mapping(
                        context.resolve(step.mapping), xref_dir=context.root / "mappings" /
                        "xref", schemas_dir=context.root / "schemas")
                except ConfigError as exc:
                    exc.with_context(field=f"{name}.mapping")
                    raise
        self._made: tuple[str, Envelope] | None = None  # the last order's sales order request
        self._sinks: dict[str, Sink] = {}
        if context.sinks is None:
            raise ConfigError("order_saga needs the runtime's sinks", sink=context.instance)
        used = config.sinks_used()
        try:  # built now: a wrong name or a broken sink fails at start-up, not per order
            for _, name in used:
                if name not in self._sinks:
                    self._sinks[name] = context.sinks(name)
        except KeyError as exc:
            self.close()
            field = next((f for f, n in used if n == exc.args[0]), None)
            raise ConfigError(f"there is no sink {exc.args[0]!r}", field=field,
                              sink=context.instance) from None
        except BaseException:
            self.close()
            raise

    def sink(self, name: str) -> Sink:
        return self._sinks[name]

    def close(self) -> None:
        for sink in self._sinks.values():
            sink.close()
        self._sinks.clear()

    # -- OrderSystems --------------------------------------------------------------------------
    def start(self, envelope: Envelope, policy: SourcingPolicy, now: float) -> Saga:
        payload = envelope.payload if isinstance(envelope.payload, dict) else {}
        order_id = payload.get("order_id")
        lines = payload.get("lines")
        if not isinstance(order_id, str) or not isinstance(lines, list) or not lines:
            raise PermanentError("an accepted order needs order_id and lines",
                                 field="order_id" if not isinstance(order_id, str) else "lines",
                                 envelope_id=envelope.id, sink=self._context.instance)
        keys = [f"{envelope.idempotency_key}#line{line.get('line_no')}" for line in lines]
        if "reservations" in self._maps:  # the as-ordered reservations: the mapping's keys
            made = self._maps["reservations"](envelope)
            if len(made) == len(lines):
                keys = [out.idempotency_key for out in made]
        channel = payload.get("channel")
        if channel not in policy.channels:
            channel = policy.default_channel
        customer = payload.get("customer")
        return Saga(order_id=order_id, channel=channel, started=now, lines=[
            Line(line_no=int(line["line_no"]), sku=str(line["sku"]),
                 quantity=str(line["quantity"]), key=key,
                 charged=_charged(line, bool(payload.get("taxes_included"))))
            for line, key in zip(lines, keys, strict=True)],
            paid=payload.get("status") == "paid", currency=payload.get("currency"),
            refs={"order": envelope.idempotency_key,
                  "sales_order": self._sales_order(envelope).idempotency_key},
            customer=customer if isinstance(customer, dict) else None)

    def sink_for(self, kind: str) -> str | None:
        cfg = self._config
        names = {"reserve": cfg.reservations.sink, "release": cfg.releases,
                 "sales_order": cfg.sales_order.sink, "cancel_lines": cfg.sales_changes,
                 "tell_shop": cfg.shop_lines, "shop_cancel": cfg.shop_cancels,
                 "notify": cfg.notify}
        return names.get(kind)

    def key_for(self, envelope: Envelope, saga: Saga, step: Step) -> str:
        if step.kind in ("reserve", "release") and step.key:
            return step.key
        if step.kind == "sales_order":
            return self._sales_order_key(envelope, saga)
        order = saga.refs.get("order", envelope.idempotency_key)
        if step.kind == "cancel_lines":
            return f"{order}>cancel-lines:{step.key}"
        if step.kind == "shop_cancel":
            return f"{order}>shop-cancel:{step.key}"
        return f"{order}>{step.kind}" + (f"#{saga.round}" if saga.round else "")

    def _sales_order_key(self, envelope: Envelope, saga: Saga) -> str:
        return saga.refs.get("sales_order") or self._sales_order(envelope).idempotency_key

    def perform(self, envelope: Envelope, saga: Saga, step: Step, key: str,
                attempt: int) -> str | None:
        out = self._request(envelope, saga, step, key)
        if attempt:
            out = out.next_attempt()
        try:
            name = self.sink_for(step.kind)
            assert name is not None, f"no sink for {step.kind}: the manager skips the step"
            self.sink(name).deliver(out)
        except PermanentError as exc:
            if step.kind == "reserve" and self._short.search(str(exc)):
                return exc.message
            if step.kind == "release" and "NotFound" in str(exc):
                return None  # never reserved (a timed-out try): nothing to release
            raise
        return None

    # -- requests ------------------------------------------------------------------------------
    def _request(self, envelope: Envelope, saga: Saga, step: Step, key: str) -> Envelope:
        cfg = self._config
        if step.kind == "reserve":
            assert step.location is not None and step.line_no is not None
            line = saga.line(step.line_no)
            payload = {"ExternalReference": key[:40], "Material": line.sku,
                       **self._where(step.location), "Quantity": str(step.quantity)}
            return envelope.derive("erp.reservation.requested", payload, idempotency_key=key)
        if step.kind == "release":
            numbering = cfg.reservations.numbering
            reservation = key.removesuffix(">release")
            reference = document_reference(reservation, numbering.prefix, numbering.length) \
                if numbering else reservation[:40]
            return envelope.derive("erp.reservation.release", {
                "ExternalReference": key[:40], "ReservationReference": reference},
                idempotency_key=key)
        if step.kind == "sales_order":
            return self._sales_order(envelope)
        if step.kind == "cancel_lines":
            numbering = cfg.sales_order.numbering
            so_key = self._sales_order_key(envelope, saga)
            reference = document_reference(so_key, numbering.prefix, numbering.length) \
                if numbering else so_key[:40]
            return envelope.derive("erp.sales_order.change", {
                "ExternalReference": key[:40], "SalesOrderReference": reference,
                "LineNo": [int(n) for n in (step.key or "").split(",")],
                "Reason": step.reason[:200]}, idempotency_key=key)
        if step.kind == "tell_shop":
            return envelope.derive("shop.order.lines", self._shop_lines(saga),
                                   idempotency_key=key)
        if step.kind == "shop_cancel":
            return envelope.derive("shop.order.cancel_lines", self._shop_cancel(saga, step),
                                   idempotency_key=key)
        return envelope.derive("order.exception.raised", self._event(envelope, saga),
                               idempotency_key=key)

    def _where(self, location: str) -> dict[str, str]:
        plant, storage = self._plant.get(location), self._storage.get(location)
        if plant is None or storage is None:
            raise PermanentError(f"location {location!r} is not in the xref table "
                                 f"{self._config.locations!r}", field="policy.channels")
        return {"Plant": str(plant), "StorageLocation": str(storage)}

    def _sales_order(self, envelope: Envelope) -> Envelope:
        if self._made is not None and self._made[0] == envelope.id:
            return self._made[1]  # start() made it: the mapping runs once per order
        made = self._map_sales_order(envelope)
        self._made = (envelope.id, made)
        return made

    def _map_sales_order(self, envelope: Envelope) -> Envelope:
        if "sales_order" in self._maps:
            made = self._maps["sales_order"](envelope)
            if len(made) == 1:
                return made[0]
        return envelope.derive("erp.sales_order.requested")

    def _lines(self, saga: Saga) -> list[dict[str, Any]]:
        lead = self._config.policy.back_order.lead_days
        expected = (datetime.now(UTC) + timedelta(days=lead)).date().isoformat()
        first = self._config.policy.locations(saga.channel)[0]
        out = []
        for line in saga.lines:
            shipped = [{"location": a.location, "quantity": a.quantity}
                       for a in line.allocations if a.state == "reserved"]
            status = line.status if line.status in ("back_ordered", "cancelled") else \
                "re_sourced" if any(s["location"] != first for s in shipped) else "fulfilled"
            back = line.remaining() if line.status == "back_ordered" else Decimal(0)
            out.append({"line_no": line.line_no, "sku": line.sku, "quantity": line.quantity,
                        "status": status, "ships_from": shipped,
                        "location": shipped[0]["location"] if shipped else None,
                        "back_ordered": str(back),
                        "expected_date": expected if line.status == "back_ordered" else None,
                        "reason": line.reason})
        return out

    def _shop_cancel(self, saga: Saga, step: Step) -> dict[str, Any]:
        """The lines to cancel at the shop, each with the money to refund when the order was
        paid (what was charged for the line: a cancelled line gives up all its units)."""
        numbers = {int(n) for n in (step.key or "").split(",")}
        lines = []
        for line in saga.lines:
            if line.line_no not in numbers:
                continue
            lines.append({"line_no": line.line_no, "quantity": int(line.ordered),
                          "sku": self._shop_sku.get(line.sku, line.sku),
                          "refund": line.charged if saga.paid else "0.00"})
        return {"order_id": saga.order_id.removeprefix(self._config.shop_order_prefix),
                "currency": saga.currency, "reason": step.reason[:500], "lines": lines}

    def _shop_lines(self, saga: Saga) -> dict[str, Any]:
        lines = [ln for ln in self._lines(saga) if ln["status"] != "fulfilled" or saga.round]
        order = saga.order_id.removeprefix(self._config.shop_order_prefix)
        return {"order_id": order, "reason": "; ".join(
            str(ln["reason"]) for ln in lines if ln["reason"])[:500] or None, "lines": [
            {**{k: ln[k] for k in ("line_no", "quantity", "status", "location",
                                   "expected_date")},
             "sku": self._shop_sku.get(ln["sku"], ln["sku"])} for ln in lines]}

    def _event(self, envelope: Envelope, saga: Saga) -> dict[str, Any]:
        from integration_bus.retail.orders.saga import outcome_of

        return {"order_id": saga.order_id, "channel": saga.channel,
                "outcome": outcome_of(saga, self._config.policy),
                "customer": saga.customer,
                "lines": self._lines(saga),
                "occurred_at": datetime.now(UTC).isoformat()}


class OrderSagaSink:
    """Each delivery is one accepted order: a manager drives its saga as far as it can. A
    worker batch is worked on by ``concurrency`` lanes, each with its own sinks (BatchSink)."""

    def __init__(self, config: OrderSagaConfig, context: ConnectorContext) -> None:
        self.name = context.instance
        if context.sagas is None:
            raise ConfigError("order_saga needs the bus's saga store", sink=self.name)
        self._config, self._context = config, context
        self._metrics = OrderMetrics.of(context.metrics.registry)
        SinkSystems(config, context).close()  # a broken config fails at start-up, not per order
        self._lanes: Lanes[OrderProcessManager, Envelope] = Lanes(
            config.concurrency, self._manager, key=_order_key,
            dispose=lambda m: m.systems.close(), name=self.name)

    def _manager(self, _lane: int) -> OrderProcessManager:
        stock = self._context.stock

        def atp(sku: str, location: str) -> Decimal | None:
            return stock.available_to_promise([(sku, location)])[(sku, location)]

        return OrderProcessManager(self._context.sagas, self._config.policy,
                                   SinkSystems(self._config, self._context), atp,
                                   clock=self._context.clock, on_final=self._aged)

    def _aged(self, record: SagaRecord) -> None:
        outcome = record.outcome or "unknown"
        self._metrics.final.labels(outcome).inc()
        self._metrics.age.labels(outcome).observe(record.age_seconds())

    @property
    def policy(self) -> SourcingPolicy:
        return self._config.policy

    def deliver(self, envelope: Envelope) -> None:
        (outcome,) = self.deliver_many([envelope])
        if outcome is not None:
            raise outcome

    def deliver_many(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        """A worker batch in four moves: the lanes make each new order's saga and the claims
        of its as-ordered effects; one transaction stores them all; the lanes drive each
        saga (an order that needs more than its as-ordered effects saves as it goes); one
        transaction saves the ends of the orders that reached theirs. Rechecks are driven
        (and saved) on their own."""
        outcomes: list[BaseException | None] = [None] * len(envelopes)
        orders = [i for i, e in enumerate(envelopes) if e.type != RECHECK_TYPE]
        begun = self._lanes.call([envelopes[i] for i in orders],
                                 lambda manager, _, envelope: manager.begin(envelope))
        made = [(i, b) for i, b in zip(orders, begun, strict=True)
                if not isinstance(b, BaseException)]
        for i, b in zip(orders, begun, strict=True):
            if isinstance(b, BaseException):
                outcomes[i] = b
        started: dict[int, Started] = {}
        if made:
            try:
                stored = self._context.sagas.start_many([b for _, b in made])
            except BaseException as exc:  # the store: every order of the batch waits
                for i, _ in made:
                    outcomes[i] = exc
                stored = []
            for (i, (_, claims)), (record, claimed) in zip(made, stored, strict=False):
                started[i] = Started(record, claims, claimed)
        work = [i for i in range(len(envelopes)) if i in started or i not in orders]

        def drive(manager: OrderProcessManager, position: int,
                  envelope: Envelope) -> SagaRecord | PendingSave | None:
            index = work[position]
            try:
                if index in started:
                    return manager.resume(envelope, started[index], defer=True)
                return manager.recheck(_order_key(envelope), envelope)
            except OrderNeedsDecision:
                self._metrics.waiting.inc()
                raise

        driven = self._lanes.call([envelopes[i] for i in work], drive)
        pending = [(i, d) for i, d in zip(work, driven, strict=True)
                   if isinstance(d, PendingSave)]
        for i, d in zip(work, driven, strict=True):
            if isinstance(d, BaseException):
                outcomes[i] = d
        if pending:
            try:
                saved = self._context.sagas.save_many([
                    (p.record, p.saga, p.entries, p.settle, p.failed) for _, p in pending])
            except BaseException as exc:
                saved = [exc] * len(pending)
            for (i, _), result in zip(pending, saved, strict=True):
                if isinstance(result, BaseException):
                    outcomes[i] = result
                elif result.state == "final":
                    self._aged(result)
        return outcomes

    def close(self) -> None:
        self._lanes.close()


def _charged(line: dict[str, Any], taxes_included: bool) -> str | None:
    """What the customer paid for a canonical order line: line_total - discount (+ tax when
    the prices exclude it); None when the order does not say."""
    try:
        paid = Decimal(str(line["line_total"])) - Decimal(str(line.get("discount") or 0))
        if not taxes_included:
            paid += Decimal(str(line.get("tax") or 0))
    except (KeyError, ArithmeticError):
        return None
    return str(paid.quantize(Decimal("0.01")))


def _order_key(envelope: Envelope) -> str:
    payload = envelope.payload
    order = payload.get("order_id") if isinstance(payload, dict) else None
    return str(order or envelope.idempotency_key)


plugin = ConnectorPlugin(
    name="order_saga",
    summary="sink: the order process manager (reserve, re-source, back-order or cancel per "
            "the sourcing policy, with compensation); source: rechecks back-ordered orders "
            "(stock arrived, or the back order waited too long)",
    sink_config=OrderSagaConfig,
    create_sink=OrderSagaSink,
    source_config=OrderRecheckConfig,
    create_source=OrderRecheckSource,
)
