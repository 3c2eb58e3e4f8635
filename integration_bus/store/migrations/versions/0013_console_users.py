"""Console users: local logins of ``bus console`` (name, role, Argon2 password hash), and two
indexes for the console's dead-letter pages on large stores (bench/console.py): the filtered
list (route + status, newest failure first) and the groups (counts and times per fingerprint
of a status, read from the index alone).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "console_users",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("updated_at", Stamp, nullable=False),
    )
    op.create_index("ix_dead_letters_route_status_failed", "dead_letters",
                    ["route", "status", "last_failed_at"])
    op.create_index("ix_dead_letters_status_groups", "dead_letters",
                    ["status", "fingerprint", "first_failed_at", "last_failed_at"])


def downgrade() -> None:
    op.drop_index("ix_dead_letters_status_groups", table_name="dead_letters")
    op.drop_index("ix_dead_letters_route_status_failed", table_name="dead_letters")
    op.drop_table("console_users")
