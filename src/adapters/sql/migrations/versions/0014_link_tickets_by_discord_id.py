"""An index on the ``/link`` tickets' Discord id: a new ``/link``, a link and an unlink spend
the Discord account's earlier tickets (at most one button stays live), which without it meant
reading every ticket not yet purged at each of them.

Revision ID: 0014_link_tickets_by_discord_id
Revises: 0013_unverified_discord_emails
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0014_link_tickets_by_discord_id"
down_revision: str | None = "0013_unverified_discord_emails"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_link_tickets_discord_id", "link_tickets", ["discord_id"])


def downgrade() -> None:
    op.drop_index("ix_link_tickets_discord_id", table_name="link_tickets")
