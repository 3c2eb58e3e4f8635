"""``bus`` sink: publishes the route's output back to ``bus.ingress`` as a new message type.

This is how routes chain and fan out: e.g. a POS sale mapped to a canonical sale is published as
``sale.recorded``, which the ERP route and the shop route both take. The new envelope is derived
from the delivered one (same correlation, caused by it) and its idempotency key is derived
deterministically, so a re-publish after a crash is absorbed by the next routes' ledger; hence
the runtime takes no ledger claim of its own for this sink (``deduplicated_downstream``).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator

from integration_bus.connector import (
    ConnectorContext,
    ConnectorPlugin,
    Envelope,
    Publisher,
    check_type,
)

__all__ = ["BusSink", "BusSinkConfig", "plugin"]


class BusSinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str = Field(description="message type of the published envelope, e.g. sale.recorded")
    schema_: str | None = Field(None, alias="schema", description="schema name@version it follows")

    @field_validator("type")
    @classmethod
    def _valid_type(cls, value: str) -> str:
        try:
            return check_type(value)
        except Exception as exc:
            raise ValueError(str(exc)) from None


class BusSink:
    #: what it publishes carries a key derived from the delivered one, which every next route
    #: claims in its own ledger: the runtime takes no claim for this sink (issue 16)
    deduplicated_downstream = True

    def __init__(self, config: BusSinkConfig, context: ConnectorContext) -> None:
        self.name = context.instance
        self._config = config
        self._context = context
        self._publisher: Publisher | None = None  # opened in the thread that delivers

    def deliver(self, envelope: Envelope) -> None:
        if self._publisher is None:
            self._publisher = self._context.open_publisher()
        derived = envelope.derive(type=self._config.type, schema=self._config.schema_,
                                  source=self.name)
        self._publisher.publish(derived)  # raises UnroutableError / PublishNacked / ...

    def deliver_many(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        """Publish a worker batch with one confirm window instead of a round trip each."""
        if self._publisher is None:
            self._publisher = self._context.open_publisher()
        derived = [e.derive(type=self._config.type, schema=self._config.schema_,
                            source=self.name) for e in envelopes]
        return list(self._publisher.publish_many(derived))

    def close(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.close()


plugin = ConnectorPlugin(
    name="bus",
    summary="sink: publishes the output back to bus.ingress as a new message type "
            "(chains and fans out routes)",
    sink_config=BusSinkConfig,
    create_sink=BusSink,
)
