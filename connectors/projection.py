"""``projection`` sink: applies stock level envelopes to the bus's stock projection.

Each envelope is a canonical stock level (``schemas/canonical/stock_level.v1.json``): sku,
location, on_hand, optionally reserved and in_transit, and the source's version for that pair.
Applying is a compare-and-set on the version, so the order they arrive in does not matter.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from integration_bus.connector import ConnectorContext, ConnectorPlugin, Envelope

__all__ = ["ProjectionSink", "ProjectionSinkConfig", "plugin"]


class ProjectionSinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProjectionSink:
    def __init__(self, config: ProjectionSinkConfig, context: ConnectorContext) -> None:
        self.name = context.instance
        self._stock = context.stock

    def deliver(self, envelope: Envelope) -> None:
        (outcome,) = self._stock.apply_envelopes([envelope])
        if outcome is not None:
            raise outcome

    def deliver_many(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        return self._stock.apply_envelopes(envelopes)

    def close(self) -> None:
        """Nothing to release."""


plugin = ConnectorPlugin(
    name="projection",
    summary="sink: applies stock levels to the stock projection (compare-and-set on version)",
    sink_config=ProjectionSinkConfig,
    create_sink=ProjectionSink,
)
