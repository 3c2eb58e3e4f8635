"""A polling source for tests: an upstream system with a change log (think ERP stock changes).

``Upstream`` holds changes with increasing sequence numbers; the ``changes`` connector's polling
source asks for those after its cursor, stages them as envelopes together with the new cursor,
and can be told to block mid-poll (to show that only one poll runs at a time).
"""

from __future__ import annotations

import threading

from pydantic import BaseModel, ConfigDict

from integration_bus.connector import ConnectorContext, ConnectorPlugin, Envelope


class Upstream:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.changes: list[dict[str, object]] = []
        self.calls = 0
        self.hold = threading.Event()
        self.holding = threading.Event()
        self.hold.set()
        self.crash_next = False  # the next poll dies of an unexpected error (a bug)
        self.sources_built = 0

    def add(self, count: int) -> None:
        with self.lock:
            start = len(self.changes)
            self.changes += [{"seq": start + i + 1, "sku": f"SKU-{start + i}", "on_hand": i}
                             for i in range(count)]

    def since(self, seq: int) -> list[dict[str, object]]:
        self.calls += 1
        if self.crash_next:
            self.crash_next = False
            raise RuntimeError("bug in the upstream client")
        self.holding.set()
        self.hold.wait(30)
        with self.lock:
            return [c for c in self.changes if int(str(c["seq"])) > seq][:100]


class ChangesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    interval: float = 0.05


class ChangesSource:
    def __init__(self, config: ChangesConfig, context: ConnectorContext,
                 upstream: Upstream) -> None:
        self.name = context.instance
        self.interval_ms = int(config.interval * 1000)
        self._context = context
        self._upstream = upstream
        self._closed = False
        upstream.sources_built += 1

    def poll(self) -> int:
        if self._closed:
            raise RuntimeError("polled after close")
        cursor = int(self._context.cursors.get("seq") or 0)
        changes = self._upstream.since(cursor)
        if not changes:
            return 0
        envelopes = [Envelope.create("stock.changed", c, source=self.name,
                                     idempotency_key=f"{self.name}:{c['seq']}") for c in changes]
        self._context.stage(envelopes, ("seq", str(changes[-1]["seq"])))
        return len(envelopes)

    def close(self) -> None:
        self._closed = True


def changes_plugin(upstream: Upstream) -> ConnectorPlugin:
    return ConnectorPlugin(name="changes", summary="test polling source",
                           source_config=ChangesConfig,
                           create_source=lambda cfg, ctx: ChangesSource(cfg, ctx, upstream))
