"""The shape of ``config/bus.yaml`` as pydantic models (also the source of its JSON Schema).

Connector instances are validated twice: here only ``connector`` (the plugin name) is known; the
plugin's own config model validates the rest (see ``settings.loader``).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from integration_bus.durations import Millis, parse_millis
from integration_bus.envelope import MAX_MESSAGE_BYTES
from integration_bus.fate import backoff_ms
from integration_bus.http_limits import HttpLimits

__all__ = [
    "BrokerSettings",
    "BusSettings",
    "ConnectorInstance",
    "DeadLetterSettings",
    "Millis",
    "OperatorSettings",
    "ReconcileSettings",
    "RetryPolicy",
    "RouteSettings",
    "StoreSettings",
    "parse_millis",
]

NAME_PATTERN = r"^[a-z][a-z0-9_-]*$"
_PATTERN = re.compile(r"^(?:[a-z0-9_-]+|\*|#)(?:\.(?:[a-z0-9_-]+|\*|#))*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class BrokerSettings(_Model):
    """Where messages travel. No ``url`` (or an empty one) means embedded mode."""

    url: str | None = Field(
        None, description="amqp://user:pass@host:5672/vhost; several nodes of a cluster separated "
                          "by ';' (clients fail over to the next); empty = embedded")
    failover_strategy: Literal["round-robin", "shuffle"] = Field(
        "round-robin", description="the order in which clients try the nodes of a ';' list: "
                                   "as listed, or shuffled (spreads connections over nodes)")
    prefetch: int = Field(200, ge=1, le=65535, description="unacked messages per consumer")
    batch_size: int = Field(100, ge=1, description="messages a worker settles per store commit")
    heartbeat: int = Field(30, ge=0, description="AMQP heartbeat in seconds (0 disables)")
    confirm_window: int = Field(512, ge=1, description="unconfirmed publishes in flight")
    max_message: int = Field(MAX_MESSAGE_BYTES, ge=1024, le=512 * 1024 * 1024,
                             description="largest envelope published, in bytes (keep it at "
                                         "or below the broker's max_message_size); a bigger "
                                         "one is dead-lettered at its source, alone")
    max_queued: int = Field(10_000, ge=100, le=10_000_000,
                            description="embedded mode: messages queued at most (all routes, "
                                        "on disk); a source publishing into full queues waits "
                                        "(back-pressure)")
    connect_timeout: Millis = 10_000
    retry_tiers: list[Millis] = Field(
        default_factory=lambda: [1000, 5000, 30_000, 120_000, 600_000],
        min_length=1, description="fixed delays of the retry tier queues")

    @field_validator("url")
    @classmethod
    def _empty_is_embedded(cls, value: str | None) -> str | None:
        if value and any(not part.strip() for part in value.split(";")):
            raise ValueError("an empty broker URL in the ';' list (a stray ';'?)")
        return value or None

    @field_validator("retry_tiers")
    @classmethod
    def _positive_tiers(cls, value: list[int]) -> list[int]:
        if any(v <= 0 for v in value):
            raise ValueError("retry tiers must be longer than 0 ms")
        return sorted(set(value))


class StoreSettings(_Model):
    url: str = Field("sqlite:///var/bus.db",
                     description="SQLAlchemy URL; relative SQLite paths are under the project dir")
    pool_size: int = Field(5, ge=1)
    settle_behind: bool = Field(
        True, description="PostgreSQL behind RabbitMQ: a batch's settlement commits while the "
                          "worker runs the next batch, and the batch is acked once it has "
                          "(off: each batch waits for its own commit)")
    journal_retention: Millis | None = Field(
        None, description="the scheduler deletes journal rows, published outbox rows, seen "
                          "keys and ledger entries older than this, e.g. '30d'; none = keep them")


class RetryPolicy(_Model):
    """Exponential backoff over the broker's retry tiers, then the dead-letter store."""

    max_attempts: int = Field(5, ge=1, le=100, description="deliveries before dead-lettering")
    initial_delay: Millis = 1000
    multiplier: float = Field(2.0, ge=1.0, le=10.0)
    max_delay: Millis = 600_000

    @model_validator(mode="after")
    def _initial_within_max(self) -> RetryPolicy:
        if self.initial_delay > self.max_delay:
            raise ValueError("initial_delay is longer than max_delay")
        return self

    def delay_ms(self, attempt: int) -> int:
        """Delay before attempt ``attempt + 1`` (attempt counts from 0): ``fate.backoff_ms``."""
        return backoff_ms(self, attempt)


class RouteSettings(_Model):
    from_: list[str] = Field(alias="from", min_length=1,
                             description="message type patterns (AMQP topic syntax)")
    pipeline: str | None = Field(None, description="mapping name; none = pass through")
    to: list[str] = Field(min_length=1, description="sink names")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    delivery_limit: int = Field(10, ge=1, le=1000,
                                description="broker-side cap on deliveries: the last net for "
                                            "worker crashes (crash_limit acts first)")
    crash_limit: int | None = Field(
        None, ge=1, le=100,
        description="worker process deaths while handling a message before the bus "
                    "dead-letters it as crashed_worker; must be below delivery_limit "
                    "(default: 3, or delivery_limit - 1 when that is lower)")
    group: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]+$",
        description="bulkhead: routes of one group share a consumer, batch loop and sink "
                    "instances; default: each route is its own group")
    deadline: Millis = Field(
        30_000, gt=0, le=3_600_000,
        description="longest a sink call may take before the worker gives up on it "
                    "(in doubt: retried, the ledger/lookup keeps the effect single)")

    @model_validator(mode="after")
    def _crash_limit_below_delivery_limit(self) -> RouteSettings:
        if self.crash_limit is not None and self.crash_limit >= self.delivery_limit:
            raise ValueError(f"crash_limit ({self.crash_limit}) must be below delivery_limit "
                             f"({self.delivery_limit}): the bus must dead-letter a message "
                             "that crashes the worker before the broker's net catches it")
        return self

    @property
    def effective_crash_limit(self) -> int:
        if self.crash_limit is not None:
            return self.crash_limit
        return max(1, min(3, self.delivery_limit - 1))

    @field_validator("from_")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not _PATTERN.match(pattern):
                raise ValueError(f"{pattern!r} is not a type pattern "
                                 "(dot-separated words, '*' for one word, '#' for any)")
        return value


class ConnectorInstance(BaseModel):
    """A source or sink: ``connector`` names the plugin; the rest is the plugin's config."""

    model_config = ConfigDict(extra="allow", frozen=True)
    connector: str


class DeadLetterSettings(_Model):
    """The dead-letter console: what to mask, how long to keep."""

    redact: list[str] = Field(
        default_factory=list,
        description="more payload paths masked in list/show/export (beside the built-in "
                    "list): 'customer.email', 'lines[*].card', '**.loyalty_id' (any depth)")
    redact_builtin: bool = Field(
        True, description="mask emails, phones, names, street addresses, payment and identity "
                          "fields by key name and in text (docs/security.md); false: only the "
                          "redact paths")
    retention: Millis | None = Field(
        None, description="the scheduled purge (bus scheduler) removes replayed and discarded "
                          "dead letters older than this, e.g. '30d'; none = keep them")
    purge_every: Millis = Field(3_600_000, gt=0,
                                description="how often the scheduled purge runs")


Role = Literal["viewer", "operator", "admin"]


class OperatorSettings(_Model):
    """Who may do what with dead letters (``bus dlq``): OS users and groups mapped to roles.

    viewer: read masked data; operator: also replay, retry, discard, restore; admin: also
    edit, unmask, purge, force. The role of the user running the CLI is, in this order: their
    entry in ``users``; the highest role of their groups in ``groups``; ``config_owner`` if
    they own bus.yaml (whoever can write the config can grant themselves any role anyway);
    ``default``.
    """

    users: dict[Annotated[str, Field(min_length=1)], Role] = Field(
        default_factory=dict, description="OS user name -> role")
    groups: dict[Annotated[str, Field(min_length=1)], Role] = Field(
        default_factory=dict, description="OS group name -> role")
    config_owner: Role | Literal["none"] = Field(
        "admin", description="role of the OS user owning config/bus.yaml")
    default: Role | Literal["none"] = Field(
        "viewer", description="role of everyone else; none: no access")


class AvailabilitySettings(_Model):
    """Available to promise = on hand - reserved - safety stock (+ in transit if counted)."""

    safety_stock: Decimal = Field(Decimal(0), ge=0, description="units held back everywhere")
    per_location: dict[str, Decimal] = Field(default_factory=dict,
                                             description="safety stock by location")
    include_in_transit: bool = False
    max_staleness: Millis = Field(2000, description="GET /availability answers from a cache "
                                                    "at most this old")
    http_port: int | None = Field(None, ge=1, le=65535,
                                  description="bus run serves GET /availability here")
    http: HttpLimits = Field(default_factory=HttpLimits,
                             description="read deadlines, connection limit, bounded error logs")

    @field_validator("safety_stock", mode="before")
    @classmethod
    def _no_float(cls, value: object) -> object:
        if isinstance(value, float):
            raise ValueError("write quantities as integers or quoted decimals, not floats")
        return value


class ReconcileSettings(_Model):
    """Defaults of ``bus reconcile`` (its options override them): which connector instances
    read the ERP's and the shop's stock, and which locations are compared."""

    erp: str | None = Field(None, pattern=NAME_PATTERN,
                            description="source or sink reading the ERP's stock (soap_erp)")
    shop: str | None = Field(None, pattern=NAME_PATTERN,
                             description="source or sink reading the shop's levels (rest_shop)")
    locations: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="location codes compared; empty: every location "
                                          "the projection or the shop knows")
    every: Millis | None = Field(None, description="bus scheduler (celery beat) reconciles this "
                                                   "often, e.g. '1h'; none = only by hand")
    metrics_file: str | None = Field(
        None, description="the scheduled reconcile writes its gauges here (Prometheus textfile "
                          "format, relative to the project dir), e.g. var/bus_reconcile.prom")

    @model_validator(mode="after")
    def _scheduled_needs_instances(self) -> ReconcileSettings:
        if self.every is not None and (self.erp is None or self.shop is None):
            raise ValueError("a scheduled reconcile (every) needs erp and shop")
        if self.every is not None and self.every < 60_000:
            raise ValueError("reconcile.every must be at least 1m: each run queries the ERP "
                             "and the shop for every SKU and location")
        return self


class MetricsSettings(_Model):
    """Where a process serves ``/metrics``, ``/health`` and ``/ready``. ``--metrics-host`` and
    ``--metrics-port`` (and ``BUS_METRICS_HOST`` / ``BUS_METRICS_PORT``) win over these: give
    each process on one host its own port."""

    host: str = Field("127.0.0.1", min_length=1,
                      description="address to listen on; 0.0.0.0 (or ::) for every interface, "
                                  "e.g. in a container")
    port: int | None = Field(None, ge=0, le=65535,
                             description="none: not served unless --metrics-port says; 0: any "
                                         "free port (printed at start)")
    http: HttpLimits = Field(default_factory=HttpLimits,
                             description="read deadlines, connection limit, bounded error logs")


class BusSettings(_Model):
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    dead_letters: DeadLetterSettings = Field(default_factory=DeadLetterSettings)
    operators: OperatorSettings = Field(default_factory=OperatorSettings)
    availability: AvailabilitySettings = Field(default_factory=AvailabilitySettings)
    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    sources: dict[Annotated[str, Field(pattern=NAME_PATTERN)], ConnectorInstance] = Field(
        default_factory=dict)
    sinks: dict[Annotated[str, Field(pattern=NAME_PATTERN)], ConnectorInstance] = Field(
        default_factory=dict)
    routes: dict[Annotated[str, Field(pattern=NAME_PATTERN)], RouteSettings] = Field(
        default_factory=dict)
