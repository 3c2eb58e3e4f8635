"""The order process manager's saga state (one row per order, versioned) and its timeline;
messages held until a date (future-dated prices).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "order_sagas",
        sa.Column("order_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(32)),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("data", _JSON, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("final_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_order_sagas_state", "order_sagas", ["state"])
    op.create_table(
        "order_saga_events",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("order_id", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("decision", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("detail", _JSON),
    )
    op.create_index("ix_order_saga_events_order", "order_saga_events", ["order_id", "id"])
    op.create_table(
        "held_messages",
        sa.Column("holder", sa.String(128), primary_key=True),
        sa.Column("idempotency_key", sa.String(512), primary_key=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("envelope", _JSON, nullable=False),
        sa.Column("held_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_held_messages_due", "held_messages", ["holder", "due_at"])


def downgrade() -> None:
    op.drop_table("held_messages")
    op.drop_table("order_saga_events")
    op.drop_table("order_sagas")
