"""The file ledger: what the source knows about each file, durably, in the bus's cursor store.

One entry per file identity — (store, sha256 of the content) — holding its state, size, the
records confirmed so far and where to resume (line and byte offset). States::

    publishing ──> published ──> archived          (quarantined: the file went to error/)

An entry is written *after* the broker confirmed what it counts, so after a crash the ledger never
claims more than was confirmed; it may claim less (a window confirmed but not yet recorded), and
those records are published again with the same idempotency keys, which the route ledger absorbs.
Each node also keeps the list of its entries still in flight (``open:<node>``), so a crash
between moving a file to archive/ and recording it is repaired at the next start.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Literal

import orjson

from integration_bus.connector import CursorStore

__all__ = ["FileEntry", "FileLedger", "FileState"]

FileState = Literal["publishing", "published", "archived", "quarantined"]


@dataclass
class FileEntry:
    store: str
    sha256: str
    name: str
    size: int
    node: str
    claimed_as: str  # the file's path in processing/ while this entry is in flight
    state: FileState = "publishing"
    records: int = 0  # detail records in the file
    confirmed: int = 0  # published and confirmed by the broker
    rejected: int = 0  # dead-lettered (bad or unroutable)
    next_line: int = 0  # lines before this one are done
    next_offset: int = 0  # byte offset where next_line starts
    archive_as: str | None = None
    reason: str | None = None
    updated_at: float = field(default_factory=time.time)

    @property
    def key(self) -> str:
        return entry_key(self.store, self.sha256)

    @property
    def terminal(self) -> bool:
        return self.state in ("archived", "quarantined")


def entry_key(store: str, sha256: str) -> str:
    return f"file:{store}:{sha256}"


class FileLedger:
    """Entries over a :class:`CursorStore` (keys ``file:<store>:<sha256>``, ``open:<node>``)."""

    def __init__(self, cursors: CursorStore, node: str) -> None:
        self._cursors = cursors
        self._open_key = f"open:{node}"

    def get(self, store: str, sha256: str) -> FileEntry | None:
        raw = self._cursors.get(entry_key(store, sha256))
        return FileEntry(**orjson.loads(raw)) if raw else None

    def get_key(self, key: str) -> FileEntry | None:
        raw = self._cursors.get(key)
        return FileEntry(**orjson.loads(raw)) if raw else None

    def put(self, entry: FileEntry) -> None:
        """Save ``entry``; a non-terminal entry is listed as open first, a terminal one is
        unlisted after (so a crash in between leaves at most a stale listing)."""
        entry.updated_at = time.time()
        if not entry.terminal:
            self._listed(entry.key, add=True)
        self._cursors.set(entry.key, orjson.dumps(asdict(entry)).decode())
        if entry.terminal:
            self._listed(entry.key, add=False)

    def open_keys(self) -> list[str]:
        raw = self._cursors.get(self._open_key)
        return list(orjson.loads(raw)) if raw else []

    def unlist(self, key: str) -> None:
        self._listed(key, add=False)

    def _listed(self, key: str, *, add: bool) -> None:
        keys = self.open_keys()
        if (key in keys) == add:
            return
        keys = [*keys, key] if add else [k for k in keys if k != key]
        self._cursors.set(self._open_key, orjson.dumps(keys).decode())
