"""``hold``: messages held until their date — a future-dated price waits for the day it is
valid from.

Sink: each envelope is published again as ``type`` (as the ``bus`` sink does) once the date in
its ``due`` field has come; an envelope whose date lies ahead is kept in the store
(``held_messages``, once per idempotency key) instead. Source (a polling source naming the
sink): each poll moves the held envelopes that are due into the outbox and out of the hold in
one transaction; the relay publishes them with confirms. The time is the bus's clock
(``ConnectorContext.clock``), so tests move it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from integration_bus.connector import (
    ConfigError,
    ConnectorContext,
    ConnectorPlugin,
    Envelope,
    Millis,
    PermanentError,
    Publisher,
    check_type,
)
from integration_bus.store import utcnow
from integration_bus.store.held import Held, HeldMessages
from integration_bus.topology import INGRESS_EXCHANGE

__all__ = ["HoldSink", "HoldSinkConfig", "HoldSource", "HoldSourceConfig", "plugin"]


class HoldSinkConfig(BaseModel):
    """``type``/``schema``: what a due envelope is published as; ``due``: the payload field
    holding its date (ISO date or date-time; a date means midnight UTC)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str = Field(description="message type a due envelope is published as")
    schema_: str | None = Field(None, alias="schema", description="its schema name@version")
    due: str = Field("valid_from", description="payload field holding the date it is due")

    @field_validator("type")
    @classmethod
    def _valid_type(cls, value: str) -> str:
        try:
            return check_type(value)
        except Exception as exc:
            raise ValueError(str(exc)) from None


class HoldSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    sink: str = Field(description="the hold sink whose held messages this releases when due")
    interval: Millis = Field(1000, description="how often it looks for due messages")


def _due(envelope: Envelope, field: str, sink: str) -> datetime:
    value = envelope.payload.get(field) if isinstance(envelope.payload, dict) else None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise PermanentError(f"{field} is not an ISO date or date-time: {value!r}",
                             field=field, envelope_id=envelope.id, sink=sink) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class HoldSink:
    def __init__(self, config: HoldSinkConfig, context: ConnectorContext) -> None:
        self.name = context.instance
        if context.store is None:
            raise ConfigError("the hold sink needs the bus's store", sink=self.name)
        self._config, self._context = config, context
        self._held = HeldMessages(context.store.db)
        self._publisher: Publisher | None = None  # opened in the thread that delivers

    def deliver(self, envelope: Envelope) -> None:
        (outcome,) = self.deliver_many([envelope])
        if outcome is not None:
            raise outcome

    def deliver_many(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        now = datetime.fromtimestamp(self._context.clock(), UTC)
        outcomes: list[BaseException | None] = [None] * len(envelopes)
        now_due: list[tuple[int, Envelope, datetime]] = []
        later: list[tuple[int, Envelope, datetime]] = []
        for index, envelope in enumerate(envelopes):
            try:
                due = _due(envelope, self._config.due, self.name)
            except PermanentError as exc:
                outcomes[index] = exc
                continue
            (now_due if due <= now else later).append((index, envelope, due))
        if later:
            self._held.hold(self.name, [Held(e.idempotency_key, due, self._derive(e).to_dict())
                                        for _, e, due in later], now=utcnow())
            self._context.log.info("hold.held", sink=self.name, count=len(later))
        if now_due:
            if self._publisher is None:
                self._publisher = self._context.open_publisher()
            published = self._publisher.publish_many([self._derive(e) for _, e, _ in now_due])
            for (index, _, _), failure in zip(now_due, published, strict=True):
                outcomes[index] = failure
        return outcomes

    def _derive(self, envelope: Envelope) -> Envelope:
        return envelope.derive(type=self._config.type, schema=self._config.schema_,
                               source=self.name)

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None


class HoldSource:
    """Releases due held messages of one hold sink (a PollingSource)."""

    def __init__(self, config: HoldSourceConfig, context: ConnectorContext) -> None:
        self.name = context.instance
        if context.store is None:
            raise ConfigError("the hold source needs the bus's store", source=self.name)
        self._config, self._context = config, context
        self._held = HeldMessages(context.store.db)
        self.interval_ms = config.interval

    def poll(self) -> int:
        due_by = datetime.fromtimestamp(self._context.clock(), UTC)  # the bus's clock
        released = self._held.release_due(self._config.sink, due_by, exchange=INGRESS_EXCHANGE,
                                          reason=f"hold:{self._config.sink}", now=utcnow())
        if not released:
            return 0
        self._context.log.info("hold.released", source=self.name, count=released)
        return released

    def close(self) -> None:
        """Nothing held open."""


plugin = ConnectorPlugin(
    name="hold",
    summary="sink: publishes a message again when the date in it has come, holding it in the "
            "store until then; source: releases the held messages that are due",
    sink_config=HoldSinkConfig, create_sink=HoldSink,
    source_config=HoldSourceConfig, create_source=HoldSource,
)
