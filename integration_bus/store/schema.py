"""The SQL tables (SQLAlchemy Core). Changes go through an Alembic migration in ``migrations/``."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
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
    Index("ix_journal_route_event", "route", "event"),
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
    Column("reason", String(32), nullable=False),  # error | delivery_limit | expired | rejected
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

cursors = Table(
    "cursors", metadata,
    Column("key", String(255), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", Stamp, nullable=False),
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
