"""A dead letter is unique per (envelope, route), not per envelope.

Two routes may take the same envelope (fan-out) and both fail it; with a unique envelope id the
second route's dead letter was dropped on conflict. The table is rebuilt (SQLite cannot drop a
column's UNIQUE) with a unique index on (envelope_id, route) instead.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
Stamp = sa.DateTime(timezone=True)
COLUMNS = ("id, envelope_id, route, step, sink, reason, error_type, message, traceback, "
           "fingerprint, attempts, envelope, source_ref, status, first_failed_at, "
           "last_failed_at, created_at, source, edited_payload, status_reason, replays, "
           "updated_at")


def upgrade() -> None:
    op.create_table(
        "dead_letters_v5",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("envelope_id", sa.String(64), nullable=False),
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
        sa.Column("source", sa.String(128)),
        sa.Column("edited_payload", Json),
        sa.Column("status_reason", sa.Text),
        sa.Column("replays", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated_at", Stamp),
    )
    op.execute(f"INSERT INTO dead_letters_v5 ({COLUMNS}) SELECT {COLUMNS} FROM dead_letters")
    op.drop_table("dead_letters")
    op.rename_table("dead_letters_v5", "dead_letters")
    op.create_index("ux_dead_letters_envelope_route", "dead_letters", ["envelope_id", "route"],
                    unique=True)
    op.create_index("ix_dead_letters_route_status", "dead_letters", ["route", "status"])
    op.create_index("ix_dead_letters_fingerprint", "dead_letters", ["fingerprint"])
    op.create_index("ix_dead_letters_source", "dead_letters", ["source"])
    op.create_index("ix_dead_letters_last_failed", "dead_letters", ["last_failed_at"])


def downgrade() -> None:
    raise NotImplementedError("0005 is not reversible: envelopes may now have several rows")
