"""An account remembers when Discord was last unlinked from it: from then on a Discord sign-in
with the account's address never links it without a proof of the account (its password or an
emailed link), so a Discord account its owner unlinked, perhaps because someone else holds it,
cannot be linked back by its email.

Filled in from the audit trail (``unlinked`` events) for the unlinks that happened before this
revision, as far back as the trail's retention kept them. An older version running beside this
one during a rolling upgrade neither reads nor writes the column: its unlinks are not
remembered, and it links by email as before.

Revision ID: 0010_discord_unlinked_at
Revises: 0009_device_epoch
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from adapters.sql.tables import UtcDateTime

revision: str = "0010_discord_unlinked_at"
down_revision: str | None = "0009_device_epoch"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("discord_unlinked_at", UtcDateTime(), nullable=True))
    accounts = sa.table("accounts", sa.column("id", sa.Uuid()), sa.column("discord_unlinked_at"))
    audit = sa.table(
        "audit_events",
        sa.column("kind", sa.String()),
        sa.column("at"),
        sa.column("account_id", sa.Uuid()),
    )
    unlinks = (audit.c.kind == "unlinked", audit.c.account_id == accounts.c.id)
    last_unlink = sa.select(sa.func.max(audit.c.at)).where(*unlinks).scalar_subquery()
    # Only the accounts that unlinked: the others' rows are left as they are (not rewritten
    # under the ALTER's lock while instances of the older version serve).
    op.execute(
        sa.update(accounts)
        .where(sa.exists().where(*unlinks))
        .values(discord_unlinked_at=last_unlink)
    )


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("discord_unlinked_at")
