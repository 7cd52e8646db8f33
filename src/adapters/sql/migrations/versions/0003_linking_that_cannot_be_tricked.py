"""Linking that cannot be tricked: pending logins keep no live secret and can confirm a /link
ticket; sessions get a public id, how they started, when they were last used and their last
proof of identity; one account per email address; link proposals (email linking "confirm")
and their emailed links.

``pending_login`` is recreated: its rows live 10 minutes, so a sign-in under way during the
upgrade is refused ("start again") rather than converted. Existing sessions keep working; they
count as signed in with a password, used and proved at no known time.

Addresses become unique (a partial unique index on the normalised email). Accounts that
already share an address keep it and are marked ``email_shared``: they stay out of the index,
and the login policy refuses to match them ("ambiguous"), as before. Nothing is deleted or
rewritten; an owner who changes the email of such an account gets a unique one.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from adapters.sql.tables import UtcDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _pending_login(*, purposes: str, old: bool) -> None:
    secret_columns = (
        [sa.Column("pkce_verifier", sa.String(length=128), nullable=False)]
        if old
        else [sa.Column("ticket_hash", sa.String(length=64), nullable=True)]
    )
    op.create_table(
        "pending_login",
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=8), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("browser_hash", sa.String(length=64), nullable=False),
        *secret_columns,
        sa.Column("destination", sa.String(length=2048), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("consumed_at", UtcDateTime(), nullable=True),
        sa.CheckConstraint(purposes, name=op.f("ck_pending_login_purpose_known")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_pending_login_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("state_hash", name=op.f("pk_pending_login")),
    )
    op.create_index(op.f("ix_pending_login_expires_at"), "pending_login", ["expires_at"])


def _new_uuids() -> str:
    if op.get_bind().dialect.name == "postgresql":
        return "gen_random_uuid()"
    return "lower(hex(randomblob(16)))"  # SQLAlchemy's Uuid on SQLite: 32 hex characters


def upgrade() -> None:
    op.drop_table("pending_login")
    _pending_login(purposes="purpose IN ('login', 'link', 'ticket', 'reauth')", old=False)

    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("id", sa.Uuid(), nullable=True))
        batch.add_column(
            sa.Column("method", sa.String(length=16), server_default="password", nullable=False)
        )
        batch.add_column(sa.Column("last_seen_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("proved_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("proved_with", sa.String(length=16), nullable=True))
    op.execute(f"UPDATE sessions SET id = {_new_uuids()}")  # noqa: S608 - no input in it
    with op.batch_alter_table("sessions") as batch:
        batch.alter_column("id", existing_type=sa.Uuid(), nullable=False)
        batch.create_unique_constraint(op.f("uq_sessions_id"), ["id"])

    with op.batch_alter_table("accounts") as batch:
        batch.add_column(
            sa.Column("email_shared", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.execute(
        "UPDATE accounts SET email_shared = true WHERE email_normalized IN ("
        " SELECT email_normalized FROM accounts WHERE email_normalized IS NOT NULL"
        " GROUP BY email_normalized HAVING count(*) > 1)"
    )
    op.create_table(
        "link_proposals",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("discord_id", sa.BigInteger(), nullable=False),
        sa.Column("discord_username", sa.String(length=64), nullable=False),
        sa.Column("discord_global_name", sa.String(length=64), nullable=True),
        sa.Column("discord_avatar", sa.String(length=128), nullable=True),
        sa.Column("destination", sa.String(length=2048), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("consumed_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_link_proposals_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_link_proposals")),
    )
    op.create_index(op.f("ix_link_proposals_account_id"), "link_proposals", ["account_id"])
    op.create_index(op.f("ix_link_proposals_expires_at"), "link_proposals", ["expires_at"])
    with op.batch_alter_table("email_tokens") as batch:
        batch.add_column(sa.Column("proposal_hash", sa.String(length=64), nullable=True))
        batch.drop_constraint(op.f("ck_email_tokens_purpose_known"), type_="check")
        batch.create_check_constraint(
            op.f("ck_email_tokens_purpose_known"), "purpose IN ('verify', 'reset', 'link')"
        )
    op.create_index(
        "uq_accounts_email_normalized",
        "accounts",
        ["email_normalized"],
        unique=True,
        postgresql_where=sa.text("NOT email_shared"),
        sqlite_where=sa.text("NOT email_shared"),
    )


def downgrade() -> None:
    op.execute("DELETE FROM email_tokens WHERE purpose = 'link'")
    with op.batch_alter_table("email_tokens") as batch:
        batch.drop_constraint(op.f("ck_email_tokens_purpose_known"), type_="check")
        batch.create_check_constraint(
            op.f("ck_email_tokens_purpose_known"), "purpose IN ('verify', 'reset')"
        )
        batch.drop_column("proposal_hash")
    op.drop_table("link_proposals")
    op.drop_index("uq_accounts_email_normalized", table_name="accounts")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("email_shared")

    with op.batch_alter_table("sessions") as batch:
        batch.drop_constraint(op.f("uq_sessions_id"), type_="unique")
        for column in ("proved_with", "proved_at", "last_seen_at", "method", "id"):
            batch.drop_column(column)

    op.drop_table("pending_login")
    _pending_login(purposes="purpose IN ('login', 'link')", old=True)
