"""Dead-letter console: source, edits, status reasons, replay links, relay claims, audit log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
AutoId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("dead_letters") as batch:
        batch.add_column(sa.Column("source", sa.String(128)))
        batch.add_column(sa.Column("edited_payload", Json))
        batch.add_column(sa.Column("status_reason", sa.Text))
        batch.add_column(sa.Column("replays", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("updated_at", Stamp))
    source = ("envelope->>'source'" if op.get_bind().dialect.name == "postgresql"
              else "json_extract(envelope, '$.source')")
    op.execute(f"UPDATE dead_letters SET source = {source}")
    op.create_index("ix_dead_letters_source", "dead_letters", ["source"])
    op.create_index("ix_dead_letters_last_failed", "dead_letters", ["last_failed_at"])
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("dead_letter_id", sa.String(32)))
        batch.add_column(sa.Column("claimed_by", sa.String(64)))
        batch.add_column(sa.Column("claimed_at", Stamp))
    op.create_index("ix_outbox_dead_letter", "outbox", ["dead_letter_id"])
    op.create_table(
        "dlq_audit",
        sa.Column("id", AutoId, primary_key=True, autoincrement=True),
        sa.Column("at", Stamp, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", Json),
    )
    op.create_index("ix_dlq_audit_at", "dlq_audit", ["at"])


def downgrade() -> None:
    op.drop_table("dlq_audit")
    op.drop_index("ix_outbox_dead_letter", "outbox")
    with op.batch_alter_table("outbox") as batch:
        for column in ("claimed_at", "claimed_by", "dead_letter_id"):
            batch.drop_column(column)
    op.drop_index("ix_dead_letters_last_failed", "dead_letters")
    op.drop_index("ix_dead_letters_source", "dead_letters")
    with op.batch_alter_table("dead_letters") as batch:
        for column in ("updated_at", "replays", "status_reason", "edited_payload", "source"):
            batch.drop_column(column)
