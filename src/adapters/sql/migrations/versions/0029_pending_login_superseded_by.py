"""A pending login remembers whom a later Discord sign-in of the browser it is bound to signed
in (``superseded_by``, an account id): the first load of its callback, still waiting on
Discord when the next person at that browser signed in with Discord, starts no session for
anyone else afterwards (it would have been handed to whoever opened that callback again
within the minute from that browser). The same person's other tab still finishes.

One nullable column, nothing filled in, no index (the rows are found by ``browser_hash``,
indexed by 0028). An older version running beside this one during a rolling upgrade neither
reads nor writes the column: its Discord sign-ins record nothing, and its callbacks start
their sessions as before (that race stays as it was while it runs).

Revision ID: 0029_pending_login_superseded_by
Revises: 0028_pending_login_signed_out
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0029_pending_login_superseded_by"
down_revision: str | None = "0028_pending_login_signed_out"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("pending_login") as batch:
        batch.add_column(sa.Column("superseded_by", sa.Uuid(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pending_login") as batch:
        batch.drop_column("superseded_by")
