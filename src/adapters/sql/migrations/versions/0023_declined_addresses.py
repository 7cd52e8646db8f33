"""The addresses whose holder declined an account ("This is not my account", with the
confirmation link we emailed them): that account may not claim them again.

Before this version a decline took the address off the account, and the account could type it
again at once: a new confirmation email went to the person who had just declined it, as often
as the address's limits let it. ``ChangeEmail`` now refuses that account's claim to that
address (``errors.EmailDeclined``); other accounts, and the address's owner, are not
concerned. A row stays as long as its account (the foreign key's cascade).

The upgrade creates the table and fills it with the declines made before it that can still
be told: the audit trail's ``email_disowned`` events name no address, but a decline spent the
account's confirmation links at the very moment it was audited, and a link names its address
(the links are kept until ``purge-expired`` removes them, at its first run after they
expire: a confirmation link lasts 24 hours). An account
whose earlier decline is no longer known may type the address once more, which its holder may
decline again. The downgrade drops the table: the accounts may then claim their declined
addresses again, as before this version.

Revision ID: 0023_declined_addresses
Revises: 0022_unconfirmed_claims
Create Date: 2026-11-24
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

from adapters.sql.tables import UtcDateTime

revision: str = "0023_declined_addresses"
down_revision: str | None = "0022_unconfirmed_claims"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_EVENTS = sa.table(
    "audit_events",
    sa.column("kind", sa.String()),
    sa.column("at", UtcDateTime()),
    sa.column("account_id", sa.Uuid()),
)
_TOKENS = sa.table(
    "email_tokens",
    sa.column("purpose", sa.String()),
    sa.column("account_id", sa.Uuid()),
    sa.column("email", sa.String()),
    sa.column("consumed_at", UtcDateTime()),
)
_DECLINED = sa.table(
    "declined_addresses",
    sa.column("account_id", sa.Uuid()),
    sa.column("email_normalized", sa.String()),
    sa.column("declined_at", UtcDateTime()),
)


def _normalized(email: str) -> str:
    """``domain.model.normalize_email`` of an address stored since 0018 (its domain in ASCII
    already), as of this revision (a migration must not follow the code that changes)."""
    return email.strip().lower()


def upgrade() -> None:
    op.create_table(
        "declined_addresses",
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("email_normalized", sa.String(length=254), nullable=False),
        sa.Column("declined_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_declined_addresses_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "account_id", "email_normalized", name=op.f("pk_declined_addresses")
        ),
    )
    # The confirmation links each decline spent (at the moment of its event).
    spent = (
        sa.select(_TOKENS.c.account_id, _TOKENS.c.email, _EVENTS.c.at)
        .join(
            _EVENTS,
            sa.and_(
                _EVENTS.c.account_id == _TOKENS.c.account_id,
                _EVENTS.c.at == _TOKENS.c.consumed_at,
            ),
        )
        .where(_EVENTS.c.kind == "email_disowned", _TOKENS.c.purpose == "verify")
    )
    first: dict[tuple[uuid.UUID, str], datetime] = {}
    for row in op.get_bind().execute(spent):
        key = (row.account_id, _normalized(row.email))
        if key not in first or row.at < first[key]:
            first[key] = row.at
    if first:
        op.bulk_insert(
            _DECLINED,
            [
                {"account_id": account, "email_normalized": email, "declined_at": at}
                for (account, email), at in first.items()
            ],
        )


def downgrade() -> None:
    op.drop_table("declined_addresses")
