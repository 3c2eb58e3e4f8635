"""The SQL tables (SQLAlchemy Core). Changes go through an Alembic migration in ``migrations/``."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

Json = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL wants a 64-bit identity.
AutoId = BigInteger().with_variant(Integer(), "sqlite")
Stamp = DateTime(timezone=True)

journal = Table(
    "journal", metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("envelope_id", String(64), nullable=False),
    Column("event", String(32), nullable=False),
    Column("route", String(128)),
    Column("sink", String(128)),
    Column("attempt", Integer, nullable=False, server_default="0"),
    Column("at", Stamp, nullable=False),
    Column("mapping_version", String(80)),
    Column("detail", Json),
    Index("ix_journal_envelope", "envelope_id"),
    # on PostgreSQL received and delivered, two rows per message, stay out (migration 0014)
    Index("ix_journal_route_event", "route", "event",
          postgresql_where=text("event NOT IN ('received', 'delivered')")),
)

ledger = Table(
    "idempotency_ledger", metadata,
    Column("sink", String(128), primary_key=True),
    Column("idempotency_key", String(512), primary_key=True),
    Column("state", String(16), nullable=False),  # pending | done | failed
    Column("owner", String(160), nullable=False),  # "<envelope id>#<attempt>" holding the claim
    Column("envelope_id", String(64), nullable=False),
    Column("claimed_at", Stamp, nullable=False),
    Column("done_at", Stamp),
)

dead_letters = Table(
    "dead_letters", metadata,
    Column("id", String(32), primary_key=True),
    Column("envelope_id", String(64), nullable=False),
    Column("route", String(128)),
    Column("step", String(128)),
    Column("sink", String(128)),
    # error | crashed_worker | delivery_limit | expired | rejected
    Column("reason", String(32), nullable=False),
    Column("error_type", String(128), nullable=False),
    Column("message", Text, nullable=False),
    Column("traceback", Text),
    Column("fingerprint", String(64), nullable=False),
    Column("attempts", Json, nullable=False),
    Column("envelope", Json, nullable=False),
    Column("source_ref", Json),
    Column("status", String(16), nullable=False, server_default="new"),  # new | replaying |
    Column("first_failed_at", Stamp, nullable=False),                   # replayed | discarded
    Column("last_failed_at", Stamp, nullable=False),
    Column("created_at", Stamp, nullable=False),
    Column("source", String(128)),
    Column("edited_payload", Json),  # an operator's fix; the original stays in `envelope`
    Column("status_reason", Text),
    Column("replays", Integer, nullable=False, server_default="0"),
    Column("updated_at", Stamp),
    # one per envelope *and route*: two routes taking the same envelope may both fail it
    Index("ux_dead_letters_envelope_route", "envelope_id", "route", unique=True),
    Index("ix_dead_letters_route_status", "route", "status"),
    Index("ix_dead_letters_fingerprint", "fingerprint"),
    Index("ix_dead_letters_source", "source"),
    Index("ix_dead_letters_last_failed", "last_failed_at"),
    # the console's list: a route's dead letters of a status, newest failure first
    Index("ix_dead_letters_route_status_failed", "route", "status", "last_failed_at"),
    # the groups: counts and times per fingerprint of a status from the index alone
    Index("ix_dead_letters_status_groups", "status", "fingerprint", "first_failed_at",
          "last_failed_at"),
)

outbox = Table(
    "outbox", metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("envelope_id", String(64), nullable=False),
    Column("exchange", String(128), nullable=False),
    Column("routing_key", String(255), nullable=False),
    Column("envelope", Json, nullable=False),
    Column("reason", String(32), nullable=False),
    Column("created_at", Stamp, nullable=False),
    Column("published_at", Stamp),
    Column("error", Text),
    Column("dead_letter_id", String(32)),  # set for replays: published -> status 'replayed'
    Column("claimed_by", String(64)),  # a relay publishing it now (others skip it meanwhile)
    Column("claimed_at", Stamp),
    Index("ix_outbox_unpublished", "published_at", "id"),
    Index("ix_outbox_dead_letter", "dead_letter_id"),
)

dlq_audit = Table(
    "dlq_audit", metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("at", Stamp, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(32), nullable=False),
    Column("target", Text, nullable=False),
    Column("count", Integer, nullable=False, server_default="0"),
    Column("outcome", String(16), nullable=False),
    Column("detail", Json),
    Column("role", String(16)),  # the actor's role when acting
    Column("prev_hash", String(64)),  # hash chain (store/audit.py)
    Column("hash", String(64)),
    Index("ix_dlq_audit_at", "at"),
)

stock_projection = Table(
    "stock_projection", metadata,
    Column("sku", String(128), primary_key=True),
    Column("location", String(128), primary_key=True),
    Column("on_hand", String(40), nullable=False),  # decimal text (SQLite has no decimals)
    Column("reserved", String(40), nullable=False, server_default="0"),
    Column("in_transit", String(40), nullable=False, server_default="0"),
    Column("version", BigInteger, nullable=False),  # the source's sequence for this pair
    Column("source", String(128)),
    Column("envelope_id", String(64)),
    Column("updated_at", Stamp, nullable=False),
)

seen_keys = Table(
    "seen_keys", metadata,
    Column("namespace", String(128), primary_key=True),
    Column("key", String(512), primary_key=True),
    Column("envelope_id", String(64)),
    Column("at", Stamp, nullable=False),
    Index("ix_seen_keys_at", "at"),
)

console_users = Table(
    "console_users", metadata,
    Column("name", String(128), primary_key=True),
    Column("role", String(16), nullable=False),  # viewer | operator | admin
    Column("password_hash", Text, nullable=False),  # Argon2id (argon2-cffi's encoded form)
    Column("created_at", Stamp, nullable=False),
    Column("updated_at", Stamp, nullable=False),
)

cursors = Table(
    "cursors", metadata,
    Column("key", String(255), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", Stamp, nullable=False),
)

# Envelopes a worker is executing (pipeline and sinks) right now: one row per batch (``members``:
# [route, envelope id] pairs), or one per message that runs alone after a crash. A row left
# behind by a process that died names the messages it was handling; the next worker handles
# those alone and counts the deaths (crash isolation, docs/reliability.md).
crash_markers = Table(
    "crash_markers", metadata,
    Column("id", String(255), primary_key=True),
    Column("owner", String(255), nullable=False),  # host:pid:token of the executing worker
    Column("crashes", Integer, nullable=False, server_default="0"),
    Column("started_at", Stamp, nullable=False),
    Column("members", Json, nullable=False),
    Column("history", Json),  # one entry per execution that never finished
)

#: embedded mode's queues (migration 0011): one row per message in a route queue, or waiting
#: for a retry (``due_ms`` in the future); ``claimed_by`` = the consumer holding it, unacked
embedded_queue = Table(
    "embedded_queue", metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("queue", String(255), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("headers", Json),
    Column("due_ms", BigInteger, nullable=False, server_default="0"),
    Column("claimed_by", String(64)),
    Column("deliveries", Integer, nullable=False, server_default="0"),
    Index("ix_embedded_queue_take", "queue", "id"),
    Index("ix_embedded_queue_claimed", "claimed_by"),
)

order_sagas = Table(  # the order process manager: one row per order (retail/orders)
    "order_sagas", metadata,
    Column("order_id", String(128), primary_key=True),
    Column("version", Integer, nullable=False),  # optimistic concurrency: +1 per save
    Column("state", String(32), nullable=False),  # running, waiting, final
    Column("outcome", String(32)),  # fulfilled, re_sourced, partly_back_ordered, ...
    Column("channel", String(64), nullable=False),
    Column("reason", Text),
    Column("data", Json, nullable=False),
    Column("started_at", Stamp, nullable=False),
    Column("updated_at", Stamp, nullable=False),
    Column("final_at", Stamp),
    Index("ix_order_sagas_state", "state"),
)

order_saga_events = Table(  # the saga's timeline: each step and decision, and why
    "order_saga_events", metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("order_id", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("at", Stamp, nullable=False),
    Column("step", String(64), nullable=False),
    Column("decision", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("detail", Json),
    Index("ix_order_saga_events_order", "order_id", "id"),
)

held_messages = Table(  # messages held until a date (retail/hold: future-dated prices)
    "held_messages", metadata,
    Column("holder", String(128), primary_key=True),
    Column("idempotency_key", String(512), primary_key=True),
    Column("due_at", Stamp, nullable=False),
    Column("envelope", Json, nullable=False),
    Column("held_at", Stamp, nullable=False),
    Index("ix_held_messages_due", "holder", "due_at"),
)
