"""The role for linked members: the queue of Discord role changes (one row per member and
role), written with each link and unlink, applied by the role workers.

Revision ID: 0005_linked_roles
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from adapters.sql.tables import UtcDateTime

revision: str = "0005_linked_roles"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "discord_role_changes",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
            autoincrement=True,
        ),
        sa.Column("discord_id", sa.BigInteger(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("role_id", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("requested_at", UtcDateTime(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
        sa.Column("claimed_until", UtcDateTime(), nullable=True),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.Column("last_error", sa.String(length=32), nullable=True),
        sa.CheckConstraint(
            "action IN ('add', 'remove')", name=op.f("ck_discord_role_changes_action_known")
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'done', 'refused', 'failed')",
            name=op.f("ck_discord_role_changes_status_known"),
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_discord_role_changes")),
        sa.UniqueConstraint(
            "discord_id",
            "guild_id",
            "role_id",
            name=op.f("uq_discord_role_changes_discord_id_guild_id_role_id"),
        ),
    )
    op.create_index(
        "ix_discord_role_changes_due", "discord_role_changes", ["status", "next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_table("discord_role_changes")
