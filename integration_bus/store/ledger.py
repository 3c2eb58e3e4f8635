"""The idempotency ledger: one row per (sink, idempotency key), claimed before the effect.

States: ``pending`` (claimed by an owner, effect may be under way), ``done`` (effect happened),
``failed`` (the last attempt failed; the next one may claim it). The owner is
``<envelope id>#<attempt>`` of the message doing the work.

A claim is taken with ``INSERT … ON CONFLICT DO NOTHING RETURNING`` (DESIGN §6). A conflicting row
is decided as follows:

- ``done`` → DONE: the effect already happened; record a duplicate, do nothing.
- ``failed`` → taken over → CLAIMED.
- ``pending`` whose owner is this very message redelivered by the broker after a crash, or whose
  lease has expired → taken over → IN_DOUBT: the effect may or may not have happened; the caller
  asks a LookupSink, or re-sends with the same key for the target to deduplicate.
- ``pending`` otherwise → BUSY: another copy is being delivered right now; try again later.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, delete, select, tuple_, update

from integration_bus.store.database import dialect_insert
from integration_bus.store.schema import ledger

__all__ = ["Claim", "ClaimOutcome", "claim_many", "complete", "forget_done", "release",
           "reopen_done", "state"]


class ClaimOutcome(enum.Enum):
    CLAIMED = "claimed"
    IN_DOUBT = "in_doubt"
    DONE = "done"
    BUSY = "busy"


@dataclass(frozen=True, slots=True)
class Claim:
    sink: str
    key: str
    owner: str
    envelope_id: str
    redelivered: bool = False


def claim_many(conn: Connection, claims: Sequence[Claim], *, now: datetime,
               lease: timedelta) -> list[ClaimOutcome]:
    """Claim every (sink, key); one outcome per claim, in order. Runs in the caller's transaction.

    A key claimed twice in one call is BUSY the second time.
    """
    if not claims:
        return []
    insert = dialect_insert(conn.dialect.name, ledger)
    unique: dict[tuple[str, str], Claim] = {}
    for claim in claims:
        unique.setdefault((claim.sink, claim.key), claim)
    rows = [{"sink": c.sink, "idempotency_key": c.key, "state": "pending", "owner": c.owner,
             "envelope_id": c.envelope_id, "claimed_at": now} for c in unique.values()]
    stmt = insert.on_conflict_do_nothing().returning(ledger.c.sink, ledger.c.idempotency_key)
    won = {(r.sink, r.idempotency_key) for r in conn.execute(stmt, rows)}
    decided: dict[tuple[str, str], ClaimOutcome] = {k: ClaimOutcome.CLAIMED for k in won}
    contested = [k for k in unique if k not in won]
    if contested:
        existing = conn.execute(
            select(ledger.c.sink, ledger.c.idempotency_key, ledger.c.state, ledger.c.owner,
                   ledger.c.claimed_at)
            .where(tuple_(ledger.c.sink, ledger.c.idempotency_key).in_(contested))
        ).all()
        for row in existing:
            key = (row.sink, row.idempotency_key)
            decided[key] = _contest(conn, unique[key], row.state, row.owner, row.claimed_at,
                                    now=now, lease=lease)
    outcomes = []
    first_seen: set[tuple[str, str]] = set()
    for claim in claims:
        key = (claim.sink, claim.key)
        if key in first_seen or unique[key] is not claim:
            outcomes.append(ClaimOutcome.BUSY)
            continue
        first_seen.add(key)
        outcomes.append(decided.get(key, ClaimOutcome.BUSY))
    return outcomes


def _contest(conn: Connection, claim: Claim, state: str, owner: str, claimed_at: datetime,
             *, now: datetime, lease: timedelta) -> ClaimOutcome:
    if state == "done":
        return ClaimOutcome.DONE
    if state == "failed":
        return ClaimOutcome.CLAIMED if _take_over(conn, claim, "failed", owner, now) else \
            ClaimOutcome.BUSY
    mine_after_crash = owner == claim.owner and claim.redelivered
    if mine_after_crash or _naive(claimed_at) < _naive(now - lease):
        return ClaimOutcome.IN_DOUBT if _take_over(conn, claim, "pending", owner, now) else \
            ClaimOutcome.BUSY
    return ClaimOutcome.BUSY


def _take_over(conn: Connection, claim: Claim, state: str, owner: str, now: datetime) -> bool:
    # Conditional on the row still being as we read it: two contenders cannot both win.
    taken = conn.execute(
        update(ledger)
        .where(ledger.c.sink == claim.sink, ledger.c.idempotency_key == claim.key,
               ledger.c.state == state, ledger.c.owner == owner)
        .values(state="pending", owner=claim.owner, envelope_id=claim.envelope_id,
                claimed_at=now)
        .returning(ledger.c.idempotency_key)
    ).first()
    return taken is not None


def complete(conn: Connection, done: Sequence[tuple[str, str, str]], *, now: datetime) -> None:
    """Mark (sink, key, owner) claims done; a claim taken over meanwhile is left alone."""
    _settle(conn, done, state="done", now=now)


def release(conn: Connection, failed: Sequence[tuple[str, str, str]], *, now: datetime) -> None:
    """Mark (sink, key, owner) claims failed so a later attempt may claim them."""
    _settle(conn, failed, state="failed", now=now)


def _settle(conn: Connection, items: Sequence[tuple[str, str, str]], *, state: str,
            now: datetime) -> None:
    if not items:
        return
    conn.execute(
        update(ledger)
        .where(ledger.c.sink == bindparam("b_sink"),
               ledger.c.idempotency_key == bindparam("b_key"),
               ledger.c.owner == bindparam("b_owner"))
        .values(state=state, done_at=now if state == "done" else None),
        [{"b_sink": s, "b_key": k, "b_owner": o} for s, k, o in items],
    )


def _naive(moment: datetime) -> datetime:
    # SQLite hands back naive UTC datetimes; compare like with like.
    return moment.replace(tzinfo=None)


def state(conn: Connection, sink: str, key: str) -> str | None:
    """The ledger state of ``key`` at ``sink`` (None: never claimed)."""
    found = conn.execute(select(ledger.c.state).where(ledger.c.sink == sink,
                                                      ledger.c.idempotency_key == key)).scalar()
    return None if found is None else str(found)


def reopen_done(conn: Connection, sinks: Sequence[str], keys: Sequence[str]) -> int:
    """Mark the ``done`` rows of ``keys`` at ``sinks`` failed, so a forced replay delivers them
    again; how many."""
    result = conn.execute(update(ledger).where(ledger.c.sink.in_(list(sinks)),
                                               ledger.c.idempotency_key.in_(list(keys)),
                                               ledger.c.state == "done")
                          .values(state="failed"))
    return int(result.rowcount or 0)


def forget_done(conn: Connection, *, before: datetime) -> int:
    """Forget deliveries done before ``before`` (retention); how many. A replay of something
    older is delivered again (with the same key, for the target to deduplicate)."""
    result = conn.execute(delete(ledger).where(ledger.c.state == "done",
                                               ledger.c.done_at < before))
    return int(result.rowcount or 0)
