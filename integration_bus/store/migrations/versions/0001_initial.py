"""Initial tables: journal, idempotency ledger, dead letters, outbox, cursors.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
AutoId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "journal",
        sa.Column("id", AutoId, primary_key=True, autoincrement=True),
        sa.Column("envelope_id", sa.String(64), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("route", sa.String(128)),
        sa.Column("sink", sa.String(128)),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("at", Stamp, nullable=False),
        sa.Column("mapping_version", sa.String(80)),
        sa.Column("detail", Json),
    )
    op.create_index("ix_journal_envelope", "journal", ["envelope_id"])
    op.create_index("ix_journal_route_event", "journal", ["route", "event"])
    op.create_table(
        "idempotency_ledger",
        sa.Column("sink", sa.String(128), primary_key=True),
        sa.Column("idempotency_key", sa.String(512), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(160), nullable=False),
        sa.Column("envelope_id", sa.String(64), nullable=False),
        sa.Column("claimed_at", Stamp, nullable=False),
        sa.Column("done_at", Stamp),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("envelope_id", sa.String(64), nullable=False, unique=True),
        sa.Column("route", sa.String(128)),
        sa.Column("step", sa.String(128)),
        sa.Column("sink", sa.String(128)),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("error_type", sa.String(128), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("traceback", sa.Text),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("attempts", Json, nullable=False),
        sa.Column("envelope", Json, nullable=False),
        sa.Column("source_ref", Json),
        sa.Column("status", sa.String(16), nullable=False, server_default="new"),
        sa.Column("first_failed_at", Stamp, nullable=False),
        sa.Column("last_failed_at", Stamp, nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
    )
    op.create_index("ix_dead_letters_route_status", "dead_letters", ["route", "status"])
    op.create_index("ix_dead_letters_fingerprint", "dead_letters", ["fingerprint"])
    op.create_table(
        "outbox",
        sa.Column("id", AutoId, primary_key=True, autoincrement=True),
        sa.Column("envelope_id", sa.String(64), nullable=False),
        sa.Column("exchange", sa.String(128), nullable=False),
        sa.Column("routing_key", sa.String(255), nullable=False),
        sa.Column("envelope", Json, nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("published_at", Stamp),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_outbox_unpublished", "outbox", ["published_at", "id"])
    op.create_table(
        "cursors",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", Stamp, nullable=False),
    )


def downgrade() -> None:
    for table in ("cursors", "outbox", "dead_letters", "idempotency_ledger", "journal"):
        op.drop_table(table)
