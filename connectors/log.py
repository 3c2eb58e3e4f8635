"""``log`` sink: writes each delivered envelope to the structured log."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from integration_bus.connector import ConnectorContext, ConnectorPlugin, Envelope

__all__ = ["LogSink", "LogSinkConfig", "plugin"]


class LogSinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    level: Literal["debug", "info", "warning"] = "info"
    payload: bool = Field(False, description="include the payload (it may hold personal data)")


class LogSink:
    def __init__(self, config: LogSinkConfig, context: ConnectorContext) -> None:
        self.name = context.instance
        self._config = config
        self._log = context.log

    def deliver(self, envelope: Envelope) -> None:
        fields = {"envelope_id": envelope.id, "type": envelope.type,
                  "idempotency_key": envelope.idempotency_key}
        if self._config.payload:
            fields["payload"] = envelope.payload
        getattr(self._log, self._config.level)("envelope.delivered", **fields)

    def close(self) -> None:
        """Nothing to release."""


plugin = ConnectorPlugin(
    name="log",
    summary="sink: writes each envelope to the log (payloads only when asked)",
    sink_config=LogSinkConfig,
    create_sink=LogSink,
)
