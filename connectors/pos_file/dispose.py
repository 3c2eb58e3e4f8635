"""Where a claimed file goes when the source is done with it, and the trace it leaves.

Each outcome is a rename within the inbox's file system (never a copy), a reason file where a
person must look (error/, refused/), a journal event (``bus trace``, the journal table), a log line
and a metric:

==============  ===============  =====================================================
outcome         folder           journal event
==============  ===============  =====================================================
archived        archive/         ``pos_file.archived`` (records, rejected, sha256)
quarantined     error/           ``pos_file.quarantined`` (+ ``NAME.reason.json``)
duplicate       duplicate/       ``pos_file.duplicate`` (same store and content as before)
refused         refused/         ``pos_file.refused`` (+ ``NAME.reason.json``, typed reason)
returned        the inbox        ``pos_file.returned`` (it changed while being read)
==============  ===============  =====================================================
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.pos_file.errors import ParseError, RefusedEntry
from connectors.pos_file.inbox import Inbox, move_unique, shown, unique_target, write_reason
from connectors.pos_file.ledger import FileEntry
from connectors.pos_file.metrics import PosFileMetrics
from integration_bus.connector import ConnectorContext

__all__ = ["Claimed", "Disposer"]


@dataclass(frozen=True)
class Claimed:
    """A file this node claimed: it sits at ``path`` in processing/<node>/ under its own name."""

    inbox: Inbox
    name: str
    path: Path
    st: os.stat_result  # as listed and claimed (device and inode identify it)
    store: str


class Disposer:
    """Moves claimed files to their final folder and records what happened."""

    def __init__(self, context: ConnectorContext, metrics: PosFileMetrics) -> None:
        self._context = context
        self._metrics = metrics
        self._source = context.instance

    def _trace(self, outcome: str, event: str, detail: dict[str, Any], *,
               warn: bool = False) -> None:
        self._metrics.files.labels(self._source, outcome).inc()
        self._context.record(event, detail)  # the journal also logs it
        if warn:
            self._context.log.warning(event, **detail)

    def quarantine(self, claimed: Claimed, error: ParseError, *, sha256: str | None,
                   extra: dict[str, Any] | None = None) -> Path:
        """Move to error/ with ``NAME.reason.json`` beside it; nothing of it is published."""
        target = unique_target(claimed.inbox.error, claimed.name)
        detail = {"file": shown(claimed.name), "store": claimed.store, "sha256": sha256,
                  "error_type": error.error_type, "reason": str(error),
                  "line": error.context.get("line"), "column": error.context.get("column"),
                  "field": error.context.get("field"),
                  "quarantined_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  **(extra or {})}
        write_reason(target, detail)
        os.rename(claimed.path, target)
        self._trace("quarantined", "pos_file.quarantined", {**detail, "moved_to": str(target)},
                    warn=True)
        return target

    def refuse(self, inbox: Inbox, path: Path, name: str, error: RefusedEntry) -> Path | None:
        """Move a hostile entry (the link itself, never its target) to refused/."""
        detail = {"file": shown(name), "reason": error.reason, "error": str(error)}
        target: Path | None = None
        try:
            target = move_unique(path, inbox.refused, name)
            write_reason(target, detail)
        except FileNotFoundError:
            return None  # gone already: nothing to refuse
        except OSError as exc:  # cannot move it: the source remembers and leaves it alone
            detail["move_failed"] = str(exc)
        self._metrics.files.labels(self._source, "refused").inc()
        self._context.record("pos_file.refused", detail)
        self._context.log.warning("pos_file.refused", **detail)
        return target

    def duplicate(self, claimed: Claimed, sha256: str, first: dict[str, Any]) -> Path:
        target = move_unique(claimed.path, claimed.inbox.duplicate, claimed.name)
        self._trace("duplicate", "pos_file.duplicate", {
            "file": shown(claimed.name), "store": claimed.store, "sha256": sha256,
            "moved_to": str(target), **first})
        return target

    def give_back(self, claimed: Claimed, why: str) -> Path:
        """A file that changed while it was read goes back to the inbox to become ready
        again (or to error/ if its name was taken meanwhile)."""
        home = claimed.inbox.path / claimed.name
        if os.path.lexists(home):
            error = ParseError(f"{why}, and a new file took its name", file=claimed.name)
            return self.quarantine(claimed, error, sha256=None)
        os.rename(claimed.path, home)
        self._trace("returned", "pos_file.returned", {"file": shown(claimed.name),
                                                      "store": claimed.store, "why": why},
                    warn=True)
        return home

    def archived(self, entry: FileEntry, *, recovered: bool = False) -> None:
        detail = {"file": shown(entry.name), "store": entry.store, "sha256": entry.sha256,
                  "records": entry.records, "published": entry.confirmed,
                  "rejected": entry.rejected, "archived_as": entry.archive_as}
        if recovered:
            detail["recovered"] = True
        self._trace("archived", "pos_file.archived", detail)
