"""Seen keys: connectors remember what they already took in (webhook delivery ids, event ids).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "seen_keys",
        sa.Column("namespace", sa.String(128), primary_key=True),
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("envelope_id", sa.String(64)),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_seen_keys_at", "seen_keys", ["at"])


def downgrade() -> None:
    op.drop_table("seen_keys")
