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
from connectors.pos_file.folders import Folder
from connectors.pos_file.inbox import Inbox, shown, write_reason
from connectors.pos_file.ledger import FileEntry
from connectors.pos_file.metrics import PosFileMetrics
from integration_bus.connector import ConnectorContext

__all__ = ["Claimed", "Disposer"]

#: outcomes that refuse a file as a whole (the source-level rejections of ``bus status``)
_REJECTIONS = frozenset({"quarantined", "duplicate", "refused"})


@dataclass(frozen=True)
class Claimed:
    """A file this node claimed: ``name`` in ``folder`` (its processing/<node>/, held by
    descriptor)."""

    inbox: Inbox
    name: str
    folder: Folder
    st: os.stat_result  # as listed and claimed (device and inode identify it)
    store: str

    @property
    def path(self) -> Path:
        return self.folder.path / self.name


class Disposer:
    """Moves claimed files to their final folder and records what happened."""

    def __init__(self, context: ConnectorContext, metrics: PosFileMetrics) -> None:
        self._context = context
        self._metrics = metrics
        self._source = context.instance

    def _trace(self, outcome: str, event: str, detail: dict[str, Any], *,
               warn: bool = False) -> None:
        self._metrics.files.labels(self._source, outcome).inc()
        if outcome in _REJECTIONS:  # counted by `bus status` and bus_source_rejections_total
            self._context.rejected(outcome, event, detail)
        else:
            self._context.record(event, detail)  # the journal also logs it
        if warn:
            self._context.log.warning(event, **detail)

    def quarantine(self, claimed: Claimed, error: ParseError, *, sha256: str | None,
                   extra: dict[str, Any] | None = None) -> Path:
        """Move to error/ with ``NAME.reason.json`` beside it; nothing of it is published."""
        errors = claimed.inbox.work.get("error")
        name = errors.free_name(claimed.name)
        detail = {"file": shown(claimed.name), "store": claimed.store, "sha256": sha256,
                  "error_type": error.error_type, "reason": str(error),
                  "line": error.context.get("line"), "column": error.context.get("column"),
                  "field": error.context.get("field"),
                  "quarantined_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  **(extra or {})}
        write_reason(errors, name, detail)
        name = claimed.folder.move(claimed.name, errors, name)
        target = errors.path / name
        self._trace("quarantined", "pos_file.quarantined", {**detail, "moved_to": str(target)},
                    warn=True)
        return target

    def refuse(self, inbox: Inbox, folder: Folder, name: str,
               error: RefusedEntry) -> Path | None:
        """Move a hostile entry (the entry itself, never a link's target) from ``folder`` to
        refused/ with a reason file. None when it could not be moved (it is left alone)."""
        detail = {"file": shown(name), "reason": error.reason, "error": str(error)}
        target: Path | None = None
        try:
            refused = inbox.work.get("refused")
            moved = folder.move(name, refused)
            target = refused.path / moved
            write_reason(refused, moved, detail)
        except FileNotFoundError:
            if target is None:
                return None  # gone already: nothing to refuse
        except OSError as exc:  # cannot move it: the source remembers and leaves it alone
            detail["move_failed"] = str(exc)
        self._metrics.files.labels(self._source, "refused").inc()
        self._context.rejected("refused", "pos_file.refused", detail)
        self._context.log.warning("pos_file.refused", **detail)
        return target

    def duplicate(self, claimed: Claimed, sha256: str, first: dict[str, Any]) -> Path:
        duplicates = claimed.inbox.work.get("duplicate")
        target = duplicates.path / claimed.folder.move(claimed.name, duplicates)
        self._trace("duplicate", "pos_file.duplicate", {
            "file": shown(claimed.name), "store": claimed.store, "sha256": sha256,
            "moved_to": str(target), **first})
        return target

    def give_back(self, claimed: Claimed, why: str) -> Path:
        """A file that changed while it was read goes back to the inbox to become ready
        again (or to error/ if its name was taken meanwhile)."""
        inbox = claimed.inbox
        if inbox.folder.lstat(claimed.name) is not None:
            error = ParseError(f"{why}, and a new file took its name", file=claimed.name)
            return self.quarantine(claimed, error, sha256=None)
        claimed.folder.move(claimed.name, inbox.folder, claimed.name)
        self._trace("returned", "pos_file.returned", {"file": shown(claimed.name),
                                                      "store": claimed.store, "why": why},
                    warn=True)
        return inbox.path / claimed.name

    def archived(self, entry: FileEntry, *, recovered: bool = False) -> None:
        detail = {"file": shown(entry.name), "store": entry.store, "sha256": entry.sha256,
                  "records": entry.records, "published": entry.confirmed,
                  "rejected": entry.rejected, "archived_as": entry.archive_as}
        if recovered:
            detail["recovered"] = True
        self._trace("archived", "pos_file.archived", detail)
