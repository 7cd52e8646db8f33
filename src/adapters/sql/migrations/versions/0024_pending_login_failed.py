"""An OAuth state remembers when the callback that spent it ended without its purpose done
(``failed_at``): a "Confirm with Discord" callback loaded twice (a double click on Discord's
Authorize, a reload) says so on its second load, instead of waiting for a session that the
first load never renewed.

One nullable column, nothing filled in. An older version running beside this one during a
rolling upgrade neither reads nor writes it: a failure of its callbacks is not recorded, and
the second load of one waits until its minute is over (then "already been used", as before).

Revision ID: 0024_pending_login_failed
Revises: 0023_declined_addresses
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from adapters.sql.tables import UtcDateTime

revision: str = "0024_pending_login_failed"
down_revision: str | None = "0023_declined_addresses"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("pending_login") as batch:
        batch.add_column(sa.Column("failed_at", UtcDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pending_login") as batch:
        batch.drop_column("failed_at")
