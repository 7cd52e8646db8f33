"""The web instances and gateway bots using the database, each announcing itself once a
minute, so that one whose rate limits and interaction replay guard (or claims on interactions)
are not shared with another's (no Redis, or another Redis) is told so (see
``adapters.sql.instances``).

Revision ID: 0015_web_instances
Revises: 0014_link_tickets_by_discord_id
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from adapters.sql.tables import UtcDateTime

revision: str = "0015_web_instances"
down_revision: str | None = "0014_link_tickets_by_discord_id"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "web_instances",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("shared_state", sa.String(length=100), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("seen_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_instances")),
    )


def downgrade() -> None:
    op.drop_table("web_instances")
