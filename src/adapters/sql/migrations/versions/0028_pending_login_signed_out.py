"""A pending login remembers when the browser it is bound to signed out, or signed in again,
after its round trip started (``signed_out_at``): the first load of its callback, still
waiting on Discord when the sign-out ran, starts no session afterwards (it would have been
handed to whoever opened that callback again within the minute, such as the next person at
a shared computer going back in the history). Indexed by ``browser_hash``: a sign-out marks
the ones its binding cookie's values name.

One nullable column, nothing filled in, and an index. An older version running beside this
one during a rolling upgrade neither reads nor writes the column: its sign-outs mark nothing,
and its callbacks start their sessions as before (a sign-out's race with them stays as it
was). Built with a plain ``CREATE INDEX``: the table holds the last quarter of an hour's
round trips, so writes wait a moment at most.

Revision ID: 0028_pending_login_signed_out
Revises: 0027_pending_login_failure
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from adapters.sql.tables import UtcDateTime

revision: str = "0028_pending_login_signed_out"
down_revision: str | None = "0027_pending_login_failure"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("pending_login") as batch:
        batch.add_column(sa.Column("signed_out_at", UtcDateTime(), nullable=True))
    op.create_index(op.f("ix_pending_login_browser_hash"), "pending_login", ["browser_hash"])


def downgrade() -> None:
    op.drop_index(op.f("ix_pending_login_browser_hash"), table_name="pending_login")
    with op.batch_alter_table("pending_login") as batch:
        batch.drop_column("signed_out_at")
