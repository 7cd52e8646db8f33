"""Indexes on ``finished_at`` of the email queue, the webhook deliveries and the role changes:
each batch of the purge (hourly in every serving process, and ``purge-expired``) asks for the
rows finished before a cut-off (``finished_at IS NOT NULL AND finished_at < …``, 2,000 at a
time), which without them meant reading the whole table at every batch, the rows still to
keep (a linked member's role, the last 30 days' emails) over and over. Partial indexes (the
rows not finished yet, ``finished_at`` NULL, stay out), on Postgres and SQLite alike.

Only indexes: an older version serving beside this one during a rolling upgrade writes the
rows as before (the indexes follow), and a downgrade drops them and nothing else. Built with a
plain ``CREATE INDEX``: writes to each table wait while its index is built (a moment, unless
the table holds millions of rows).

Revision ID: 0025_purge_indexes
Revises: 0024_pending_login_failed
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025_purge_indexes"
down_revision: str | None = "0024_pending_login_failed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The index of each table, on its finished rows only.
INDEXES = (
    ("ix_outgoing_emails_finished", "outgoing_emails"),
    ("ix_webhook_deliveries_finished", "webhook_deliveries"),
    ("ix_discord_role_changes_finished", "discord_role_changes"),
)


def upgrade() -> None:
    finished = sa.text("finished_at IS NOT NULL")
    for name, table in INDEXES:
        op.create_index(
            name, table, ["finished_at"], postgresql_where=finished, sqlite_where=finished
        )


def downgrade() -> None:
    for name, table in reversed(INDEXES):
        op.drop_index(name, table_name=table)
