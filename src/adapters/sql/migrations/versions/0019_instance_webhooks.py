"""Each announced instance also says which webhook URLs it queues events for (a digest of
them): a process whose URLs differ from another's leaves holes in the receivers' streams (a
link or unlink made through it never reaches the URLs only the other names), and the others
now say so (see ``entrypoints.instances``). NULL: an instance of an earlier version, which
did not say; nothing is compared with it.

Revision ID: 0019_instance_webhooks
Revises: 0018_email_addresses_repaired
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019_instance_webhooks"
down_revision: str | None = "0018_email_addresses_repaired"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("web_instances", sa.Column("webhooks", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("web_instances") as batch:
        batch.drop_column("webhooks")
