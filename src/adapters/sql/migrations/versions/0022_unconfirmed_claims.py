"""Any number of accounts may hold an address unconfirmed; one at most holds it confirmed.

Until this version an address was one account's (the unique index on ``email_normalized``),
confirmed or not: whoever signed up first with an address held it, and its owner could not
sign up with it. Now a sign-up or an email change to an address that no account confirmed is
a claim beside the others, and the account that proves the address (its confirmation link, a
password reset link) takes it from the others (``domain/use_cases/_addresses.py``). Sign in
with Discord takes nothing: it links or refuses as DESIGN.md's table says. The unique index
covers only confirmed addresses, so that two proofs at once leave one owner.

The limits on emails to an address nobody proved count, beside every email to it, those each
client asked for (``RECIPIENT_LIMITS``): the queue's new column ``client`` names who asked
(empty for the emails queued before).

The upgrade replaces the index (every address is one account's before it, which the new index
allows) and adds the column. The downgrade drops the column and puts the old index back, and so
first leaves each address held by several (unshared) accounts with one of them: the one that
confirmed it, else the oldest (the others lose it, as an address taken by a proof is lost; they
can add one).

Revision ID: 0022_unconfirmed_claims
Revises: 0021_role_connection_lost
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022_unconfirmed_claims"
down_revision: str | None = "0021_role_connection_lost"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The accounts that lose their address at a downgrade: another unshared account holds it and
# confirmed it while this one did not, or both are alike and the other is older (then by id).
_LEAVE_ONE = """
UPDATE accounts
SET email = NULL, email_normalized = NULL, email_verified = :no
WHERE NOT email_shared
  AND email_normalized IS NOT NULL
  AND EXISTS (
    SELECT 1 FROM accounts AS other
    WHERE other.email_normalized = accounts.email_normalized
      AND NOT other.email_shared
      AND other.id <> accounts.id
      AND ((other.email_verified AND NOT accounts.email_verified)
           OR (other.email_verified = accounts.email_verified
               AND (other.created_at < accounts.created_at
                    OR (other.created_at = accounts.created_at AND other.id < accounts.id)))))
"""


def upgrade() -> None:
    op.add_column("outgoing_emails", sa.Column("client", sa.String(64), nullable=True))
    op.drop_index("uq_accounts_email_normalized", table_name="accounts")
    op.create_index(
        "uq_accounts_email_confirmed",
        "accounts",
        ["email_normalized"],
        unique=True,
        postgresql_where=sa.text("email_verified AND NOT email_shared"),
        sqlite_where=sa.text("email_verified AND NOT email_shared"),
    )


def downgrade() -> None:
    with op.batch_alter_table("outgoing_emails") as batch:
        batch.drop_column("client")
    op.get_bind().execute(sa.text(_LEAVE_ONE), {"no": False})
    op.drop_index("uq_accounts_email_confirmed", table_name="accounts")
    op.create_index(
        "uq_accounts_email_normalized",
        "accounts",
        ["email_normalized"],
        unique=True,
        postgresql_where=sa.text("NOT email_shared"),
        sqlite_where=sa.text("NOT email_shared"),
    )
