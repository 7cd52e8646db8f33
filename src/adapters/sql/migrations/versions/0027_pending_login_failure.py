"""An OAuth state remembers why the callback that spent it ended without its purpose done
(``failure``: the refusal's code, such as ``discord_signup_disabled``), beside when
(``failed_at``, 0024): a "Sign in with Discord" callback loaded twice (a double click on
Discord's Authorize, a reload) tells the first load's reason again, instead of only "did not
go through".

One nullable column, nothing filled in. An older version running beside this one during a
rolling upgrade neither reads nor writes it: a failure of its callbacks has no reason
recorded, and the second load of one says the generic words, as before. A code this version
does not know (a newer release's) is read back as the generic words too.

Revision ID: 0027_pending_login_failure
Revises: 0026_instance_purge_terms
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027_pending_login_failure"
down_revision: str | None = "0026_instance_purge_terms"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("pending_login") as batch:
        batch.add_column(sa.Column("failure", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pending_login") as batch:
        batch.drop_column("failure")
