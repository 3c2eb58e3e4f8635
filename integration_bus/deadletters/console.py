"""The dead-letter console API: what ``bus dlq`` (and later a web console) calls.

It acts as one :class:`~integration_bus.operators.Operator` (a name and a role; the caller
establishes who): each method checks the role first and audits a refusal. Everything it returns
passes the bus's redaction: secrets never, personal data masked unless an admin unmasks it
(audited). Every action is audited in the same transaction as its effect, in the hash-chained
audit log (``store/audit.py``): who and with which role, when, what (the selection or ids, the
masked diff of an edit, the reason), how many, and the outcome. Audit rows never hold unmasked
personal data.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from integration_bus.deadletters.replay import Preview, ReplayOutcome, enqueue_chunk, preview
from integration_bus.envelope import Envelope
from integration_bus.errors import BusError, ConfigError, EnvelopeError, RequestError
from integration_bus.operators import AccessDenied, Operator
from integration_bus.pipeline import Pipeline
from integration_bus.redact import Redaction
from integration_bus.settings import Config
from integration_bus.store import Store, audit, dead_letters, utcnow
from integration_bus.store.dead_letters import Connection, Selection
from integration_bus.transport import Transport, TransportPublisher

__all__ = ["ConsoleBus", "DeadLetterConsole", "EditOutcome", "EditRefused"]

CHUNK = 500


class EditRefused(RequestError):
    """An edit that does not fit the route's input schema (nothing was stored or sent)."""


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def payload_diff(before: Any, after: Any, *, label: str = "payload") -> str:
    return "".join(difflib.unified_diff(pretty(before).splitlines(True),
                                        pretty(after).splitlines(True),
                                        f"{label} (failed)", f"{label} (to send)"))


@dataclass(frozen=True)
class EditOutcome:
    """A stored edit: the diff (unmasked: an admin made it) and the schema it was checked
    against (None: the route has no schema; the edit is marked ``unchecked`` in the audit)."""

    diff: str
    validated_against: str | None


class ConsoleBus(Protocol):
    """What the console (and a face driving it) uses of a bus: a
    :class:`~integration_bus.runtime.Bus` is one. The console sits below the runtime and is
    handed the bus; it never imports it (``pyproject.toml``, import-linter layers)."""

    @property
    def config(self) -> Config: ...

    @property
    def store(self) -> Store: ...

    @property
    def redaction(self) -> Redaction: ...

    @property
    def transport(self) -> Transport: ...

    def publisher(self) -> TransportPublisher: ...

    def pipelines(self) -> Mapping[str, Pipeline]: ...


class DeadLetterConsole:
    """Reads and acts on the dead-letter store of one bus, as ``operator``."""

    def __init__(self, bus: ConsoleBus, operator: Operator) -> None:
        self.bus = bus
        self.db = bus.store.db
        self.operator = operator
        self.redaction = bus.redaction
        self.routes = {n: list(r.to) for n, r in bus.config.settings.routes.items()}

    # -- who may, and the audit ------------------------------------------------------------------
    def require(self, action: str, target: str = "-") -> None:
        """Raise AccessDenied (after auditing the refusal) unless the operator may ``action``."""
        try:
            self.operator.require(action)
        except AccessDenied:
            with self.db.begin() as conn:
                self._audit(conn, action, target, outcome="denied")
            raise

    def _audit(self, conn: Connection, action: str, target: str, *, count: int = 0,
               outcome: str = "ok", detail: dict[str, Any] | None = None,
               echoes: dict[str, str] | None = None) -> None:
        hide = self.redaction
        audit.append(conn, self.db.dialect, at=utcnow(), actor=self.operator.name,
                     role=self.operator.role, action=action, target=hide.text(target) or "-",
                     count=count, outcome=outcome,
                     detail=hide.data(detail, echoes=echoes) if detail is not None else None)

    def _searched(self, conn: Connection, selection: Selection, count: int) -> None:
        if selection.text:  # a search over masked fields could confirm a value: audited
            self._audit(conn, "search", selection.describe(), count=count)

    def audit_log(self, *, limit: int = 100, action: str | None = None) -> list[dict[str, Any]]:
        self.require("audit")
        with self.db.begin(read_only=True) as conn:
            rows = audit.recent(conn, limit=limit, action=action)
        return [{**r, "target": self.redaction.text(r["target"]),
                 "detail": self.redaction.data(r["detail"])} for r in rows]

    def verify_audit(self, *, expect_head: str | None = None) -> audit.AuditCheck:
        """Recompute the audit's hash chain (see ``store/audit.py``)."""
        self.require("audit")
        with self.db.begin(read_only=True) as conn:
            return audit.verify(conn, expect_head=expect_head)

    # -- reading -------------------------------------------------------------------------------
    def _view(self, row: dict[str, Any], unmask: bool) -> dict[str, Any]:
        hide = self.redaction
        edited = row.get("edited_payload")
        # what the payload holds is masked wherever the error repeats it, whatever its format
        echoes = {} if unmask else hide.echoes(row["envelope"], edited)
        return {**row,
                "envelope": hide.envelope(row["envelope"], unmask=unmask),
                "edited_payload": hide.payload(edited, unmask=unmask)
                if edited is not None else None,
                **{key: hide.text(row.get(key), unmask=unmask, echoes=echoes)
                   for key in ("message", "traceback", "status_reason")},
                **{key: hide.data(row.get(key), unmask=unmask, echoes=echoes)
                   for key in ("attempts", "source_ref")}}

    def _reading(self, selection: Selection | None, unmask: bool, target: str) -> None:
        self.require("read", target)
        if selection is not None and selection.text:
            self.require("search", target)
        if unmask:
            self.require("unmask", target)

    def resolved(self, selection: Selection) -> Selection:
        """``selection`` with each id spelled in full: an id or envelope id, whole or any
        unique prefix (dead_letters.AmbiguousId when a prefix fits several; an id that fits none
        stays as given and selects nothing)."""
        if not selection.ids:
            return selection
        ids: list[str] = []
        with self.db.begin(read_only=True) as conn:
            for ident in selection.ids:
                ids.extend(dead_letters.resolve(conn, ident) or [ident])
        return dataclasses.replace(selection, ids=tuple(dict.fromkeys(ids)))

    def find(self, selection: Selection, *, limit: int = 50, offset: int = 0,
             unmask: bool = False) -> tuple[list[dict[str, Any]], int]:
        selection = self.resolved(selection)
        self._reading(selection, unmask, f"list {selection.describe()}")
        with self.db.begin() as conn:
            rows = dead_letters.fetch(conn, selection, limit=limit, offset=offset)
            total = dead_letters.count(conn, selection)
            self._searched(conn, selection, total)
            if unmask:
                self._audit(conn, "unmask", f"list {selection.describe()}", count=len(rows))
        return [self._view(r, unmask) for r in rows], total

    def ids(self, selection: Selection) -> list[str]:
        """Just the ids of the dead letters selected (oldest first)."""
        selection = self.resolved(selection)
        self._reading(selection, False, f"ids {selection.describe()}")
        with self.db.begin(read_only=True) as conn:
            return dead_letters.ids(conn, selection)

    def groups(self, selection: Selection) -> list[dict[str, Any]]:
        selection = self.resolved(selection)
        self._reading(selection, False, f"groups {selection.describe()}")
        with self.db.begin() as conn:
            groups = dead_letters.groups(conn, selection)
            self._searched(conn, selection, sum(g["count"] for g in groups))
        return [{**g, "example": self.redaction.text(g["example"])} for g in groups]

    def trace(self, envelope_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """An envelope's journal (oldest first) and its dead letters, masked (``bus trace``)."""
        self.require("read", f"trace {envelope_id}")
        events = self.bus.store.journal_for(envelope_id)
        with self.db.begin(read_only=True) as conn:
            dead = dead_letters.fetch(conn, Selection(ids=(envelope_id,), statuses=()))
        echoes: dict[str, str] = {}
        for letter in dead:
            echoes.update(self.redaction.echoes(letter["envelope"], letter["edited_payload"]))
        return ([{**e, "detail": self.redaction.data(e["detail"], echoes=echoes)}
                 for e in events], [self._view(d, False) for d in dead])

    def lineage(self, envelope_id: str) -> dict[str, list[dict[str, Any]]]:
        """The envelopes before and after ``envelope_id`` in its flow (``bus trace``)."""
        self.require("read", f"trace {envelope_id}")
        return self.bus.store.lineage(envelope_id)

    def of_key(self, key: str) -> list[dict[str, Any]]:
        """Every envelope of one business key (``bus trace --key``)."""
        self.require("read", f"trace --key {self.redaction.text(key)}")
        return self.bus.store.envelopes_of_key(key)

    def show(self, ident: str, *, unmask: bool = False) -> dict[str, Any]:
        self._reading(None, unmask, f"show {ident}")
        with self.db.begin() as conn:
            row = dead_letters.one(conn, ident)
            if row is None:
                raise RequestError(f"no dead letter {ident!r}", hint="bus dlq list shows the ids")
            replays = dead_letters.replays_of(conn, row["id"])
            for replay in replays:
                replay["outcome"] = replay.pop("last_event") or (
                    "published" if replay["published_at"] else "waiting in outbox")
                replay["error"] = self.redaction.text(replay["error"], unmask=unmask)
            if unmask:
                self._audit(conn, "unmask", f"show {row['id']}", count=1)
        return {**self._view(row, unmask), "replay_history": replays}

    # -- replay ----------------------------------------------------------------------------------
    def _route_pipelines(self) -> dict[str, Pipeline]:
        """Route name -> the pipeline it runs now (routes without one pass through)."""
        by_name = self.bus.pipelines()
        return {route: by_name[settings.pipeline]
                for route, settings in self.bus.config.settings.routes.items()
                if settings.pipeline}

    def _chunks(self, selection: Selection) -> Iterator[list[str]]:
        ids = self.ids(selection)
        for start in range(0, len(ids), CHUNK):
            yield ids[start:start + CHUNK]

    def replay(self, selection: Selection, *, to_route: str | None = None,
               force: bool = False, progress: Callable[[int], None] | None = None
               ) -> ReplayOutcome:
        """Enqueue replays of the ``new`` dead letters selected (outbox + status, audited).
        ``force`` (reset the ledger so sinks deliver again) needs an admin."""
        selection = self.resolved(selection)
        self.require("replay", selection.describe())
        if force:
            self.require("force", selection.describe())
        if to_route is not None and to_route not in self.routes:
            raise ConfigError(f"no route named {to_route!r}",
                              hint=f"routes are: {', '.join(self.routes)}")
        selection = dataclasses.replace(selection, statuses=("new",))
        pipelines = self._route_pipelines()
        outcome = ReplayOutcome()
        for ids in self._chunks(selection):
            with self.db.begin() as conn:
                rows = dead_letters.fetch(conn, Selection(ids=tuple(ids), statuses=("new",)),
                                          newest_first=False)
                before = len(outcome.queued)
                enqueue_chunk(conn, rows, routes=self.routes, pipelines=pipelines,
                              to_route=to_route, force=force, outcome=outcome)
                self._audit(conn, "replay", selection.describe(),
                            count=len(outcome.queued) - before,
                            detail={"to_route": to_route, "force": force,
                                    "dead_letter_ids": outcome.queued[before:],
                                    "skipped": [s for s in outcome.skipped if s[0] in ids]})
            if progress is not None:
                progress(len(ids))
        return outcome

    def preview(self, selection: Selection, *, to_route: str | None = None,
                limit: int = 20) -> tuple[list[Preview], int]:
        """What a replay would do now, without sending anything (audited as a dry run). Output
        payloads and diffs are masked."""
        selection = self.resolved(selection)
        self.require("dry-run", selection.describe())
        pipelines = self._route_pipelines()
        hide = self.redaction
        with self.db.begin() as conn:
            rows = dead_letters.fetch(conn, selection, limit=limit, newest_first=False)
            total = dead_letters.count(conn, selection)
            previews = []
            for row in rows:
                edited = row.get("edited_payload")
                diff = payload_diff(hide.payload(row["envelope"].get("payload")),
                                    hide.payload(edited)) if edited is not None else ""
                shown = preview(conn, row, routes=self.routes, pipelines=pipelines,
                                to_route=to_route, diff=diff)
                shown.outputs = [{**o, "payload": hide.payload(o["payload"])}
                                 for o in shown.outputs]
                shown.error = hide.text(shown.error)
                previews.append(shown)
            self._audit(conn, "replay-dry-run", selection.describe(), count=total,
                        detail={"to_route": to_route})
        return previews, total

    # -- edit, discard, restore, purge --------------------------------------------------------
    def edit(self, ident: str, payload: Any) -> EditOutcome:
        """Store a fixed payload for a ``new`` dead letter after validating it against the
        route's input schema (an admin's job: it needs the unmasked payload). Where the route
        has no schema the edit is stored unchecked and audited as such. EditRefused (audited)
        if it does not fit. The audit keeps the diff of the *masked* payloads."""
        self.require("edit", ident)
        with self.db.begin() as conn:
            row = dead_letters.one(conn, ident)
            if row is None or row["status"] != "new":
                raise RequestError(f"no new dead letter {ident!r} to edit",
                               hint="only dead letters waiting (status new) can be edited")
            before = row["edited_payload"] if row["edited_payload"] is not None else \
                row["envelope"].get("payload")
            diff = payload_diff(before, payload)
            hide = self.redaction
            masked_diff = payload_diff(hide.payload(before), hide.payload(payload))
        try:
            checked = self._validate(row, payload)
        except BusError as exc:
            with self.db.begin() as conn:  # the error may repeat a value of the edit
                self._audit(conn, "edit", row["id"], count=0, outcome="refused",
                            detail={"error": str(exc), "diff": masked_diff},
                            echoes=hide.echoes(row["envelope"], before, payload))
            raise EditRefused(f"the edit does not fit: {exc}", envelope_id=row["envelope_id"],
                              **{k: v for k, v in exc.context.items()
                                 if k in ("field", "hint")}) from exc
        with self.db.begin() as conn:
            if not dead_letters.set_edited_payload(conn, row["id"], payload, now=utcnow()):
                raise RequestError(f"dead letter {row['id']} is no longer waiting (replayed or "
                               "discarded meanwhile); the edit was not stored")
            self._audit(conn, "edit", row["id"], count=1,
                        detail={"diff": masked_diff, "validated_against": checked,
                                **({"unchecked": True} if checked is None else {})})
        return EditOutcome(diff, checked)

    def _validate(self, row: dict[str, Any], payload: Any) -> str | None:
        try:
            envelope = Envelope.from_dict(row["envelope"])
        except EnvelopeError:
            return None
        schema_ref = envelope.schema
        if schema_ref is None and row.get("route"):
            pipeline = self.bus.pipelines().get(
                self.bus.config.settings.routes[row["route"]].pipeline or "")
            info = getattr(getattr(pipeline, "current", pipeline), "info", None)
            if info is not None and info.input_schema is not None:
                info.input_schema.validate(payload)
                return str(info.input_schema.ref)
            return None
        if schema_ref is None:
            return None
        from integration_bus.mapping.validation import SchemaStore

        SchemaStore(self.bus.config.schemas_dir).get(schema_ref).validate(payload)
        return schema_ref

    def _set_status(self, selection: Selection, status: str, reason: str, action: str) -> int:
        selection = self.resolved(selection)
        with self.db.begin() as conn:
            candidates = [r["id"] for r in dead_letters.fetch(conn, selection)]
            # only those still in a status the action takes
            ids = dead_letters.set_status(conn, candidates, from_statuses=selection.statuses,
                                          status=status, reason=reason, now=utcnow())
            self._audit(conn, action, selection.describe(), count=len(ids),
                        detail={"reason": reason, "ids": ids})
        return len(ids)

    def discard(self, selection: Selection, reason: str) -> int:
        self.require("discard", selection.describe())
        return self._set_status(dataclasses.replace(selection, statuses=("new",)),
                                "discarded", reason, "discard")

    def restore(self, selection: Selection, reason: str) -> int:
        self.require("restore", selection.describe())
        return self._set_status(
            dataclasses.replace(selection, statuses=("discarded", "replayed")),
            "new", reason, "restore")

    def purge(self, older_than: timedelta, *, include_new: bool = False) -> int:
        statuses = ("replayed", "discarded", *(("new",) if include_new else ()))
        self.require("purge", f"older_than={older_than} status={','.join(statuses)}")
        with self.db.begin() as conn:
            purged = dead_letters.purge(conn, statuses, failed_before=utcnow() - older_than)
            self._audit(conn, "purge", f"older_than={older_than} status={','.join(statuses)}",
                        count=purged)
        return purged

    def rows_for_export(self, selection: Selection, *, unmask: bool) -> list[dict[str, Any]]:
        selection = self.resolved(selection)
        self._reading(selection, unmask, f"export {selection.describe()}")
        self.require("export", selection.describe())
        with self.db.begin() as conn:
            rows = dead_letters.fetch(conn, selection, newest_first=False)
            self._audit(conn, "export", selection.describe(), count=len(rows),
                        detail={"unmasked": unmask})
            self._searched(conn, selection, len(rows))
        return [self._view(r, unmask) for r in rows]
