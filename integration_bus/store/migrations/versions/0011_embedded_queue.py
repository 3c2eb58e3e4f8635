"""Embedded mode's queues in the store: durable, bounded, crash-safe (issue 11).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "embedded_queue",
        sa.Column("id", _AUTO_ID, primary_key=True, autoincrement=True),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("headers", _JSON),
        sa.Column("due_ms", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("claimed_by", sa.String(64)),
        sa.Column("deliveries", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_embedded_queue_take", "embedded_queue", ["queue", "id"])
    op.create_index("ix_embedded_queue_claimed", "embedded_queue", ["claimed_by"])


def downgrade() -> None:
    op.drop_index("ix_embedded_queue_claimed", "embedded_queue")
    op.drop_index("ix_embedded_queue_take", "embedded_queue")
    op.drop_table("embedded_queue")
