"""``order_saga`` source: looks at back-ordered orders again.

Each poll reads the back-ordered sagas (final, outcome ``partly_back_ordered``) and, for each
one whose back order can move — the projection now shows stock of a back-ordered SKU at one of
the channel's locations, or the back order waited past ``back_order.wait`` — stages an
``order.recheck`` message (payload ``order_id``) in the outbox. The ``order_saga`` sink, routed
that message, opens the saga again (a new round: :func:`~.saga.recheck`) and drives it: the
back-ordered lines are reserved in policy order, or cancelled at the deadline with their
compensation (ERP lines cancelled, shop lines cancelled and refunded, the customer told).

A recheck is only a nudge: the sink decides again from the stored saga (compare-and-set on its
version), so a repeated or late recheck does nothing twice. The policy is the sink's own
(``sink:`` names the ``order_saga`` sink instance), so the two cannot disagree.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from integration_bus.connector import ConfigError, ConnectorContext, Envelope, Millis
from integration_bus.retail.orders.policy import SourcingPolicy
from integration_bus.retail.orders.saga import Saga, recheck

__all__ = ["OrderRecheckConfig", "OrderRecheckSource"]

RECHECK_TYPE = "order.recheck"


class OrderRecheckConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    sink: str = Field(description="the order_saga sink whose back-ordered orders it rechecks")
    interval: Millis = Field(60_000, description="how often it looks")
    limit: int = Field(500, ge=1, le=100_000, description="back-ordered orders per poll, "
                                                          "oldest first")


class OrderRecheckSource:
    """A PollingSource: stages ``order.recheck`` for back-ordered orders that can move."""

    def __init__(self, config: OrderRecheckConfig, context: ConnectorContext) -> None:
        self.name = context.instance
        if context.sagas is None or context.sinks is None:
            raise ConfigError("the order_saga source needs the bus's saga store and sinks",
                              source=self.name)
        try:
            sink = context.sinks(config.sink)
        except KeyError:
            raise ConfigError(f"there is no sink {config.sink!r}", field="sink",
                              source=self.name) from None
        try:
            policy = getattr(sink, "policy", None)
            if not isinstance(policy, SourcingPolicy):
                raise ConfigError(f"sink {config.sink!r} is not an order_saga sink",
                                  field="sink", source=self.name)
        finally:
            sink.close()
        self._policy = policy
        self._config, self._context = config, context
        self.interval_ms = config.interval
        self._staged: dict[str, int] = {}  # order -> the round a recheck was staged for

    def due(self) -> list[Saga]:
        """The back-ordered sagas that can move now (opened in a copy: nothing is saved)."""
        sagas = [r.saga for r in self._context.sagas.list(
            state="final", outcome="partly_back_ordered", limit=self._config.limit)]
        pairs = {(ln.sku, loc) for saga in sagas for ln in saga.lines
                 if ln.status == "back_ordered" for loc in self._policy.locations(saga.channel)}
        atp = self._context.stock.available_to_promise(sorted(pairs)) if pairs else {}

        def known(sku: str, location: str) -> Decimal | None:
            return atp.get((sku, location))

        now = self._context.clock()
        return [saga for saga in sagas
                if recheck(Saga.from_json(saga.to_json()), self._policy, known, now=now)]

    def poll(self) -> int:
        due = [s for s in self.due() if self._staged.get(s.order_id) != s.round]
        if not due:
            return 0
        self._context.stage([Envelope.create(
            RECHECK_TYPE, {"order_id": saga.order_id}, source=self.name,
            idempotency_key=f"{saga.refs.get('order', saga.order_id)}>recheck#{saga.round + 1}")
            for saga in due], None)
        self._staged.update((s.order_id, s.round) for s in due)
        self._context.log.info("orders.recheck", source=self.name, count=len(due))
        return len(due)

    def close(self) -> None:
        """Nothing held open."""
