"""On PostgreSQL the journal's (route, event) index keeps only the rarer events: every message
writes a ``received`` and a ``delivered`` row, and keeping those two in the index cost each
settlement an index insert per row (docs/benchmarks.md, issue 16). What reads the index looks
for the rare ones (retries waiting, a route's retried, dead-lettered, duplicate or filtered
envelopes); counting a route's received or delivered envelopes reads most of the table anyway.
SQLite keeps the whole index: its planner cannot match ``event = 'retried'`` to a
``NOT IN`` predicate, and counting one route's retries would read the whole table.

The upgrade builds the new index in one pass over the journal, and writes to the journal wait
until it is built: on a large journal, upgrade while the workers are stopped.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_journal_route_event", table_name="journal")
        op.create_index("ix_journal_route_event", "journal", ["route", "event"],
                        postgresql_where=sa.text("event NOT IN ('received', 'delivered')"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_journal_route_event", table_name="journal")
        op.create_index("ix_journal_route_event", "journal", ["route", "event"])
