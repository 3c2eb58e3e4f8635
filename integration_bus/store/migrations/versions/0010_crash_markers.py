"""Crash markers: the envelopes a worker is executing, so a process death is attributed.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "crash_markers",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("crashes", sa.Integer, nullable=False, server_default="0"),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("members", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("history", sa.JSON().with_variant(JSONB(), "postgresql")),
    )


def downgrade() -> None:
    op.drop_table("crash_markers")
