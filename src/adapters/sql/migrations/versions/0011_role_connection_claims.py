"""A Linked Roles row has a claim of its own (``claimed_until``): the one pusher that may send
the user's role connection to Discord now. Before, the claim was the row's next push time,
which an unlink set to "now" under a worker that was still pushing, so a second worker could
push beside it and the older state could reach Discord last.

Rows claimed when this revision runs keep that claim in ``next_push_at`` (at most the lease,
5 minutes, ahead) and are pushed when it ends. An older version running beside this one
during a rolling upgrade neither reads nor writes the column: until the upgrade is over, one
of its workers can push a row beside one of this version's.

Revision ID: 0011_role_connection_claims
Revises: 0010_discord_unlinked_at
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from adapters.sql.tables import UtcDateTime

revision: str = "0011_role_connection_claims"
down_revision: str | None = "0010_discord_unlinked_at"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("role_connection_tokens") as batch:
        batch.add_column(sa.Column("claimed_until", UtcDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("role_connection_tokens") as batch:
        batch.drop_column("claimed_until")
