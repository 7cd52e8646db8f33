"""An account made by "Sign in with Discord" no longer keeps an address Discord did not verify:
nobody proved owning it, yet a password reset to it gave the account to whoever reads that
mailbox (and unlinked the Discord account that made it, its only way in), and it kept the
address's owner from signing up with it. From this version on such an account starts without
an address; this revision takes it from the accounts made before.

Those are the accounts whose address is unconfirmed and was never changed (no
``email_changed`` event in the audit trail), made by a Discord sign-in (an
``account_created`` event ``via: discord``), or without a password: only a Discord sign-in
makes an account without one. An address the person typed themselves (an email change) stays,
as does a confirmed one. An account whose trail the retention already purged is recognised by
its missing password only; one without a password that changed its address more than the
retention ago, and never confirmed it, loses it too (it can add it again from its account
page). The addresses are not restored by a downgrade. An older version running beside this one
during a rolling upgrade still gives new accounts such an address.

Revision ID: 0013_unverified_discord_emails
Revises: 0012_webhook_queue_index
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_unverified_discord_emails"
down_revision: str | None = "0012_webhook_queue_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    accounts = sa.table(
        "accounts",
        sa.column("id", sa.Uuid()),
        sa.column("email", sa.String()),
        sa.column("email_normalized", sa.String()),
        sa.column("email_verified", sa.Boolean()),
        sa.column("email_shared", sa.Boolean()),
        sa.column("password_hash", sa.String()),
    )
    audit = sa.table(
        "audit_events",
        sa.column("kind", sa.String()),
        sa.column("account_id", sa.Uuid()),
        sa.column("detail", sa.JSON()),
    )
    mine = audit.c.account_id == accounts.c.id
    made_by_discord = sa.exists().where(
        mine,
        audit.c.kind == "account_created",
        audit.c.detail["via"].as_string() == "discord",
    )
    changed = sa.exists().where(mine, audit.c.kind == "email_changed")
    op.execute(
        sa.update(accounts)
        .where(
            accounts.c.email.is_not(None),
            sa.not_(accounts.c.email_verified),
            sa.or_(accounts.c.password_hash.is_(None), made_by_discord),
            sa.not_(changed),
        )
        .values(email=None, email_normalized=None, email_shared=False)
    )


def downgrade() -> None:
    """Nothing to undo: the addresses taken are not kept anywhere."""
