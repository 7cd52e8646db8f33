"""An index on each webhook endpoint's queue (endpoint, state, seq): a claim reads an
endpoint's first pending deliveries in queue order, which without it meant reading and
sorting every pending delivery at every pass (a dead endpoint's backlog included).

Revision ID: 0012_webhook_queue_index
Revises: 0011_role_connection_claims
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012_webhook_queue_index"
down_revision: str | None = "0011_role_connection_claims"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_webhook_deliveries_queue", "webhook_deliveries", ["endpoint", "state", "seq"]
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_queue", table_name="webhook_deliveries")
