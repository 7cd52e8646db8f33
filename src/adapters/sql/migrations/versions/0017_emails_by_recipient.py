"""An index on the email queue's recipient and time: a sign-up, an email change, a new
confirmation link and a reset to an unconfirmed address count the emails that went to the
address of late, whichever accounts asked (at most five an hour and ten a day to an address
nobody has proved), which without it meant reading the whole queue at each of them.

Revision ID: 0017_emails_by_recipient
Revises: 0016_email_domains_in_ascii
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0017_emails_by_recipient"
down_revision: str | None = "0016_email_domains_in_ascii"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_outgoing_emails_recipient", "outgoing_emails", ["recipient", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_outgoing_emails_recipient", table_name="outgoing_emails")
