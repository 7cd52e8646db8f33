"""Trusted devices end with "sign out everywhere": each account has a device epoch, part of
its device tokens' HMAC, which "sign out everywhere" moves on.

Every account starts at 0, which the HMAC leaves out: the device cookies browsers hold today
stay trusted until the next "sign out everywhere" (or password change, as before). An older
version running beside this one during a rolling upgrade neither reads nor writes the column
(its "sign out everywhere" leaves device cookies trusted, as it did).

Revision ID: 0009_device_epoch
Revises: 0008_scoped_api_keys
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_device_epoch"
down_revision: str | None = "0008_scoped_api_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(
            sa.Column("device_epoch", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("device_epoch")
