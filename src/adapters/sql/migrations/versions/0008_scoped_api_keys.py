"""Scoped API keys: each key has scopes (``links:read``, ``links:write``), maybe an expiry,
and the time it was last used (to the minute).

Keys that exist before this revision could look links up and unlink through the API: they
keep both scopes, so an upgrade breaks no service that unlinks (the operator narrows them by
creating a read-only key and revoking the old one; ``taskflow-link api-key list`` shows which
keys can write). The column's default is ``links:read`` afterwards: a row written without
scopes (an older version's ``api-key create`` during a rolling upgrade) may only read.

Revision ID: 0008_scoped_api_keys
Revises: 0007_role_connections
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from adapters.sql.tables import UtcDateTime

revision: str = "0008_scoped_api_keys"
down_revision: str | None = "0007_role_connections"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EXISTING_KEYS = "links:read links:write"  # what every key could do before scopes
NEW_ROWS = "links:read"


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column("scopes", sa.String(length=255), server_default=EXISTING_KEYS, nullable=False)
        )
        batch.add_column(sa.Column("expires_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("last_used_at", UtcDateTime(), nullable=True))
    with op.batch_alter_table("api_keys") as batch:
        batch.alter_column(
            "scopes",
            existing_type=sa.String(length=255),
            existing_nullable=False,
            server_default=NEW_ROWS,
        )


def downgrade() -> None:
    # Older versions know no scopes: every remaining key can read and unlink again there. Nor
    # do they know expiry: a key that has expired would work again there, so it is revoked
    # (at its expiry) first. One that has not expired yet works there until revoked.
    keys = sa.table(
        "api_keys", sa.column("revoked_at", UtcDateTime()), sa.column("expires_at", UtcDateTime())
    )
    op.execute(
        sa.update(keys)
        .where(
            keys.c.revoked_at.is_(None),
            keys.c.expires_at.is_not(None),
            keys.c.expires_at <= datetime.now(UTC),
        )
        .values(revoked_at=keys.c.expires_at)
    )
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("last_used_at")
        batch.drop_column("expires_at")
        batch.drop_column("scopes")
