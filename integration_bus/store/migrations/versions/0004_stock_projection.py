"""Stock projection per (sku, location), maintained by compare-and-set on the source version.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stock_projection",
        sa.Column("sku", sa.String(128), primary_key=True),
        sa.Column("location", sa.String(128), primary_key=True),
        sa.Column("on_hand", sa.String(40), nullable=False),  # decimal text: never a float
        sa.Column("reserved", sa.String(40), nullable=False, server_default="0"),
        sa.Column("in_transit", sa.String(40), nullable=False, server_default="0"),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("source", sa.String(128)),
        sa.Column("envelope_id", sa.String(64)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("stock_projection")
