"""Tamper-evident dead-letter audit: the actor's role and a hash chain over the rows.

Existing rows get their chain computed here, in id order (``store/audit.py`` defines the
hash; its format is fixed for that reason), and the head is recorded.

Revision ID: 0009
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from integration_bus.store.audit import GENESIS, HEAD_KEY, row_hash

revision = "0009"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dlq_audit") as batch:
        batch.add_column(sa.Column("role", sa.String(16)))
        batch.add_column(sa.Column("prev_hash", sa.String(64)))
        batch.add_column(sa.Column("hash", sa.String(64)))
    bind = op.get_bind()
    audit = sa.table("dlq_audit", *(sa.column(c) for c in (
        "id", "at", "actor", "role", "action", "target", "count", "outcome", "prev_hash",
        "hash")), sa.column("detail", sa.JSON()))
    prev, last_id, last_at = GENESIS, None, None
    for row in bind.execute(sa.select(audit).order_by(audit.c.id)).mappings().all():
        digest = row_hash(prev, dict(row))
        bind.execute(sa.update(audit).where(audit.c.id == row["id"])
                     .values(prev_hash=prev, hash=digest))
        prev, last_id, last_at = digest, row["id"], row["at"]
    if last_id is not None:
        cursors = sa.table("cursors", sa.column("key"), sa.column("value"),
                           sa.column("updated_at"))
        bind.execute(sa.delete(cursors).where(cursors.c.key == HEAD_KEY))
        bind.execute(sa.insert(cursors).values(key=HEAD_KEY, value=f"{last_id}:{prev}",
                                               updated_at=last_at))


def downgrade() -> None:
    op.execute(sa.text(f"DELETE FROM cursors WHERE key = '{HEAD_KEY}'"))
    with op.batch_alter_table("dlq_audit") as batch:
        for column in ("hash", "prev_hash", "role"):
            batch.drop_column(column)
