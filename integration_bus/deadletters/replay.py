"""Replay: dead letters back into their route, through the outbox, guarded by the ledger.

Enqueueing is one transaction per chunk: outbox rows for the replay envelopes (new id,
``replay_of`` = the failed envelope, same idempotency key), the dead letters moved to
``replaying``, the audit row, and — with ``force`` — the ledger rows of their outputs reset so
the sinks deliver again. The relay publishes the rows to ``bus.requeue`` with the route as
routing key (only that route gets them), and marks each dead letter ``replayed`` once the broker
confirmed. A replay killed half-way leaves each dead letter either ``new`` (not enqueued) or
``replaying`` with its outbox row; running it again relays the rows left and enqueues the rest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from integration_bus.envelope import Envelope
from integration_bus.errors import BusError, RequestError
from integration_bus.pipeline import Pipeline
from integration_bus.store import OutboxItem, dead_letters, ledger, utcnow
from integration_bus.store import outbox as outbox_ops
from integration_bus.store.dead_letters import Connection
from integration_bus.topology import REQUEUE_EXCHANGE

__all__ = ["Preview", "ReplayOutcome", "enqueue_chunk", "preview", "replay_envelope"]


@dataclass
class ReplayOutcome:
    queued: list[str] = field(default_factory=list)  # dead letter ids
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    ledger_reset: int = 0


@dataclass
class Preview:
    """What a replay of one dead letter would do now (``--dry-run``)."""

    id: str
    route: str | None
    outputs: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    effects: dict[str, str] = field(default_factory=dict)  # "sink key" -> deliver | duplicate
    diff: str = ""


def replay_envelope(row: Mapping[str, Any]) -> Envelope:
    """The envelope a replay sends: a fresh copy of the failed one, edited payload if any.

    Raises EnvelopeError for input that was rejected at its source (it never was an envelope).
    """
    envelope = Envelope.from_dict(row["envelope"]).replayed()
    if row.get("edited_payload") is not None:
        envelope = dataclasses.replace(envelope, payload=row["edited_payload"])
    return envelope


def target_route(row: Mapping[str, Any], to_route: str | None,
                 routes: Mapping[str, Sequence[str]]) -> str:
    route = to_route or row.get("route")
    if route is None:
        raise RequestError("it has no route (input rejected at its source): fix it at the source")
    if route not in routes:
        raise RequestError(f"route {route!r} is not in the configuration")
    return str(route)


def output_keys(pipeline: Pipeline, envelope: Envelope) -> list[str]:
    return [out.idempotency_key for out in pipeline(envelope)]


def enqueue_chunk(conn: Connection, rows: Sequence[Mapping[str, Any]], *,
                  routes: Mapping[str, Sequence[str]], pipelines: Mapping[str, Pipeline],
                  to_route: str | None, force: bool, outcome: ReplayOutcome) -> None:
    """Enqueue replays of ``rows`` (status ``new``) inside the caller's transaction.

    The move to ``replaying`` comes first and only for rows still ``new`` (``RETURNING``), so two
    operators replaying the same dead letters at once enqueue each one once.
    """
    now = utcnow()
    planned = {}
    for row in rows:
        try:
            planned[row["id"]] = (row, target_route(row, to_route, routes), replay_envelope(row))
        except BusError as exc:
            outcome.skipped.append((row["id"], str(exc)))
    if not planned:
        return
    taken = dead_letters.take_for_replay(conn, list(planned), now=now)
    items = []
    for ident, (_row, route, envelope) in planned.items():
        if ident not in taken:
            outcome.skipped.append((ident, "someone else is replaying it right now"))
            continue
        items.append(OutboxItem(REQUEUE_EXCHANGE, route, envelope, dead_letter_id=ident))
        if force:
            outcome.ledger_reset += _reset_ledger(conn, routes[route], pipelines.get(route),
                                                  envelope)
    outbox_ops.add(conn, items, reason="replay", now=now)
    outcome.queued.extend(str(item.dead_letter_id) for item in items)


def _reset_ledger(conn: Connection, sinks: Sequence[str], pipeline: Pipeline | None,
                  envelope: Envelope) -> int:
    try:
        keys = output_keys(pipeline, envelope) if pipeline else [envelope.idempotency_key]
    except BusError:
        return 0  # it will fail again in the route; nothing to reset
    return ledger.reopen_done(conn, sinks, keys)


def preview(conn: Connection, row: Mapping[str, Any], *, routes: Mapping[str, Sequence[str]],
            pipelines: Mapping[str, Pipeline], to_route: str | None, diff: str) -> Preview:
    result = Preview(id=str(row["id"]), route=to_route or row.get("route"), diff=diff)
    try:
        route = target_route(row, to_route, routes)
        envelope = replay_envelope(row)
        pipeline = pipelines.get(route)
        outputs = pipeline(envelope) if pipeline else [envelope]
    except BusError as exc:
        result.error = f"{exc.error_type}: {exc}"
        return result
    for out in outputs:
        result.outputs.append({"type": out.type, "idempotency_key": out.idempotency_key,
                               "payload": out.payload})
        for sink in routes[route]:
            state = ledger.state(conn, sink, out.idempotency_key)
            result.effects[f"{sink} {out.idempotency_key}"] = (
                "duplicate (already delivered)" if state == "done" else "deliver")
    return result
