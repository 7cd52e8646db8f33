"""A link remembers when, and why, its Linked Roles connection was lost (its tokens deleted
while linked: Discord's ``invalid_grant``, or a key no longer configured), until a new one is
made: the account page says so and offers to connect again.

Two nullable columns, nothing filled in: a loss before this revision was never shown and is
not now. An older version running beside this one during a rolling upgrade neither reads nor
writes them: a loss it meets is not recorded (its audit event ``role_tokens_deleted`` is).

Revision ID: 0021_role_connection_lost
Revises: 0020_plain_login_digests_gone
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from adapters.sql.tables import UtcDateTime

revision: str = "0021_role_connection_lost"
down_revision: str | None = "0020_plain_login_digests_gone"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("user_links") as batch:
        batch.add_column(sa.Column("role_connection_lost_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("role_connection_lost_why", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("user_links") as batch:
        batch.drop_column("role_connection_lost_why")
        batch.drop_column("role_connection_lost_at")
