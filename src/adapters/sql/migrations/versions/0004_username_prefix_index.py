"""An index that serves "usernames starting with…" (LIKE 'prefix%') under any collation: on
Postgres a ``text_pattern_ops`` index (the unique index only serves it under the C collation;
with 1M accounts the query was a sequential scan, most of a Discord sign-up's cost).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_accounts_username_prefix",
        "accounts",
        ["username"],
        postgresql_ops={"username": "text_pattern_ops"},
    )


def downgrade() -> None:
    op.drop_index("ix_accounts_username_prefix", table_name="accounts")
