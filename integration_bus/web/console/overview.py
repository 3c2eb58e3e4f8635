"""The overview's numbers: per route (journal fates, backlog, retries, dead letters, oldest
unsettled age; queue depth and consumers from the broker when it answers) and per source."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from integration_bus.errors import BrokerUnavailable
from integration_bus.runtime import Bus
from integration_bus.store import overview as aggregates

__all__ = ["overview"]


def overview(bus: Bus) -> dict[str, Any]:
    """``routes`` (one dict per configured route), ``sources``, ``outbox`` (rows waiting to be
    published) and ``at`` (when this was read)."""
    store = bus.store
    summary = store.route_summary()
    dead = store.dead_letter_counts()
    waiting = store.waiting_retry()
    now = datetime.now(UTC)
    with store.db.begin(read_only=True) as conn:
        oldest = aggregates.oldest_unsettled(conn)
        sources = aggregates.source_counts(conn)
    routes = []
    for binding in bus.topology.routes:
        stats = None
        if not bus.transport.embedded:  # an embedded queue lives in the `bus run` process
            try:
                stats = bus.transport.queue_stats(binding.queue)
            except BrokerUnavailable:
                stats = None
        fates = summary.get(binding.route, {})
        received = fates.get("received", 0)
        settled = sum(fates.get(k, 0) for k in ("delivered", "filtered", "dead_lettered"))
        since = oldest.get(binding.route)
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        in_retry = waiting.get(binding.route, 0)
        routes.append({
            "route": binding.route,
            "received": received,
            "delivered": fates.get("delivered", 0),
            "filtered": fates.get("filtered", 0),
            "duplicate": fates.get("duplicate", 0),
            "in_retry": in_retry,
            # every envelope received is delivered, filtered, dead-lettered or waiting to retry
            "balanced": settled + in_retry == received and not (stats and stats.messages),
            "dead_letters": dead.get(binding.route, 0),
            "backlog": max(0, received - settled),
            "queued": stats.messages if stats else None,
            "consumers": stats.consumers if stats else None,
            "oldest_unsettled": (now - since).total_seconds() if since else None,
        })
    for name in bus.config.sources:
        sources.setdefault(name, {"rejected": 0, "dead_letters": 0, "last_failure": None})
    return {"routes": routes, "sources": dict(sorted(sources.items())),
            "outbox": store.outbox_waiting(), "at": now}
