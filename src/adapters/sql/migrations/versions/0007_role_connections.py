"""Discord Linked Roles: the tokens kept (sealed) to push role connections, and the pending
logins of the verification URL (purposes ``roles`` and ``roles_link``; the column grows to 16).

Revision ID: 0007_role_connections
Revises: 0006_webhooks
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from adapters.sql.tables import UtcDateTime

revision: str = "0007_role_connections"
down_revision: str | None = "0006_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BEFORE = "purpose IN ('login', 'link', 'ticket', 'reauth')"
_AFTER = "purpose IN ('login', 'link', 'ticket', 'reauth', 'roles', 'roles_link')"


def upgrade() -> None:
    op.create_table(
        "role_connection_tokens",
        sa.Column("discord_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("sealed", sa.String(length=2048), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("next_push_at", UtcDateTime(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "discord_id > 0", name=op.f("ck_role_connection_tokens_discord_id_positive")
        ),
        sa.PrimaryKeyConstraint("discord_id", name=op.f("pk_role_connection_tokens")),
    )
    op.create_index(
        op.f("ix_role_connection_tokens_next_push_at"),
        "role_connection_tokens",
        ["next_push_at"],
    )
    with op.batch_alter_table("pending_login") as batch:
        batch.drop_constraint(op.f("ck_pending_login_purpose_known"), type_="check")
        batch.alter_column("purpose", existing_type=sa.String(length=8), type_=sa.String(length=16))
        batch.create_check_constraint(op.f("ck_pending_login_purpose_known"), _AFTER)


def downgrade() -> None:
    # Flows of the verification URL under way are dropped (they live 10 minutes).
    op.execute("DELETE FROM pending_login WHERE purpose IN ('roles', 'roles_link')")
    with op.batch_alter_table("pending_login") as batch:
        batch.drop_constraint(op.f("ck_pending_login_purpose_known"), type_="check")
        batch.alter_column("purpose", existing_type=sa.String(length=16), type_=sa.String(length=8))
        batch.create_check_constraint(op.f("ck_pending_login_purpose_known"), _BEFORE)
    op.drop_index(
        op.f("ix_role_connection_tokens_next_push_at"), table_name="role_connection_tokens"
    )
    op.drop_table("role_connection_tokens")
