"""Every exchange and queue name, and every queue argument, the bus uses (DESIGN §4).

Nothing else in the code base spells a broker name. The topology is data: :class:`Topology` is
built from the configuration and declared idempotently by a transport at start-up.

    bus.ingress (topic) --type--> bus.route.<route> (quorum, x-delivery-limit, DLX bus.dead)
    bus.retry (headers: x-bus-retry-tier) --> bus.retry.<delay> (quorum, fixed TTL,
        DLX bus.requeue) --routing key = route--> bus.route.<route>
    bus.dead (fanout) --> bus.dead-letters (quorum) --> archiver --> dead-letter table
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ATTEMPT_HEADER",
    "DEAD_EXCHANGE",
    "DEAD_LETTER_QUEUE",
    "INGRESS_EXCHANGE",
    "REQUEUE_EXCHANGE",
    "RETRY_EXCHANGE",
    "RETRY_TIER_HEADER",
    "RouteBinding",
    "Topology",
    "format_delay",
    "retry_queue",
    "route_queue",
    "topic_matches",
]

INGRESS_EXCHANGE = "bus.ingress"
DEAD_EXCHANGE = "bus.dead"
DEAD_LETTER_QUEUE = "bus.dead-letters"
RETRY_EXCHANGE = "bus.retry"
REQUEUE_EXCHANGE = "bus.requeue"
ROUTE_QUEUE_PREFIX = "bus.route."
RETRY_QUEUE_PREFIX = "bus.retry."

#: Header naming the retry tier a message waits in (matched by the headers exchange;
#: RabbitMQ ignores headers starting with "x-" when matching, so this one must not).
RETRY_TIER_HEADER = "bus-retry-tier"  # no "x-" prefix: headers exchanges ignore those
#: Our own attempt counter; RabbitMQ's x-death count changed meaning across versions.
ATTEMPT_HEADER = "x-bus-attempt"


def route_queue(route: str) -> str:
    return f"{ROUTE_QUEUE_PREFIX}{route}"


def route_of_queue(queue: str) -> str | None:
    return queue[len(ROUTE_QUEUE_PREFIX):] if queue.startswith(ROUTE_QUEUE_PREFIX) else None


def format_delay(delay_ms: int) -> str:
    """A readable, stable tier label: 250ms, 5s, 2m, 1h."""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if delay_ms % size == 0:
            return f"{delay_ms // size}{unit}"
    return f"{delay_ms}ms"


def retry_queue(delay_ms: int) -> str:
    return f"{RETRY_QUEUE_PREFIX}{format_delay(delay_ms)}"


def _quorum(**extra: Any) -> dict[str, Any]:
    # Set every argument explicitly: never rely on a broker version's defaults.
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",  # required for at-least-once dead-lettering
        **extra,
    }


@dataclass(frozen=True, slots=True)
class RouteBinding:
    """One route's queue: its name, the type patterns it takes and its broker-side limit."""

    route: str
    patterns: tuple[str, ...]
    delivery_limit: int

    @property
    def queue(self) -> str:
        return route_queue(self.route)

    def queue_arguments(self) -> dict[str, Any]:
        return _quorum(**{"x-delivery-limit": self.delivery_limit,
                          "x-dead-letter-exchange": DEAD_EXCHANGE})


@dataclass(frozen=True, slots=True)
class Topology:
    """The whole broker layout for one configuration."""

    routes: tuple[RouteBinding, ...]
    retry_tiers_ms: tuple[int, ...] = field(default=(1000, 5000, 30_000, 120_000, 600_000))

    def route(self, name: str) -> RouteBinding:
        for binding in self.routes:
            if binding.route == name:
                return binding
        raise KeyError(name)

    @staticmethod
    def retry_queue_arguments(delay_ms: int) -> dict[str, Any]:
        return _quorum(**{"x-message-ttl": delay_ms,
                          "x-dead-letter-exchange": REQUEUE_EXCHANGE})

    @staticmethod
    def dead_letter_queue_arguments() -> dict[str, Any]:
        # An explicit, very high delivery limit: newer brokers default quorum queues to 20 and
        # this queue has nowhere further to dead-letter to. The archiver stores what it cannot
        # store in full in a readable form (Store.settle), so redeliveries stay rare.
        return {"x-queue-type": "quorum", "x-overflow": "reject-publish",
                "x-delivery-limit": 100_000}

    def tier_for(self, delay_ms: int) -> int:
        """The smallest tier at least ``delay_ms`` long (the longest tier if none is)."""
        for tier in sorted(self.retry_tiers_ms):
            if tier >= delay_ms:
                return tier
        return max(self.retry_tiers_ms)

    def routes_for(self, message_type: str) -> list[str]:
        """Routes whose patterns take ``message_type`` (what the broker would do)."""
        return [b.route for b in self.routes if any(topic_matches(p, message_type)
                                                     for p in b.patterns)]


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more words."""
    return _match(tuple(pattern.split(".")), tuple(routing_key.split(".")))


def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])
