"""Persistence: journal, idempotency ledger, dead letters, outbox, cursors (SQLAlchemy 2).

``Store`` is the façade; the SQL lives in one repository module per aggregate (``journal``,
``settlement``, ``outbox``, ``ledger``, ``dead_letters``, ``cursors``, ...).
"""

from collections.abc import Sequence

from integration_bus.store.database import Database
from integration_bus.store.ledger import Claim, ClaimOutcome
from integration_bus.store.markers import CrashMarker
from integration_bus.store.outbox import OutboxItem, OutboxRow
from integration_bus.store.queue import MessageQueue, QueuedMessage
from integration_bus.store.records import DeadLetter, JournalEntry, fingerprint, utcnow
from integration_bus.store.settlement import Settlement
from integration_bus.store.store import Store, holder_alive

__all__ = [
    "Claim",
    "ClaimOutcome",
    "CrashMarker",
    "Database",
    "DeadLetter",
    "JournalEntry",
    "MessageQueue",
    "OutboxItem",
    "OutboxRow",
    "QueuedMessage",
    "SeenKeys",
    "Settlement",
    "SourceCursors",
    "Store",
    "fingerprint",
    "holder_alive",
    "utcnow",
]


class SeenKeys:
    """A connector's memory of what it already took in (``ConnectorContext.seen``)."""

    def __init__(self, store: Store, connector: str) -> None:
        self._store = store
        self._namespace = connector

    def seen(self, keys: Sequence[str]) -> dict[str, str | None]:
        return self._store.seen(self._namespace, keys)

    def remember(self, items: Sequence[tuple[str, str | None]]) -> None:
        self._store.remember(self._namespace, items)


class SourceCursors:
    """A source's view of the cursor table: its keys live under its own name."""

    def __init__(self, store: Store, source: str) -> None:
        self._store = store
        self._prefix = f"{source}:"

    def get(self, key: str) -> str | None:
        return self._store.cursor_get(self._prefix + key)

    def set(self, key: str, value: str) -> None:
        self._store.cursor_set(self._prefix + key, value)
