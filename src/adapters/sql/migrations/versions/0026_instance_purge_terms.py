"""Each announced instance also says how long its settings keep audit events
(``TASKFLOW_LINK_AUDIT_RETENTION_DAYS``; 0: forever): every web instance and gateway bot runs
the purge by its own settings, so the shortest retention won, silently (a gateway bot started
without the setting deleted at 365 days the audit events the web instances kept forever). The
purge now deletes only what every live process would, and each process names the others whose
retention differs (see ``entrypoints.instances``). NULL: an instance of an earlier version,
which did not say; nothing is compared with it.

A column that may be NULL: an older version serving beside this one during a rolling upgrade
writes its rows as before, and a downgrade drops the column and nothing else.

Revision ID: 0026_instance_purge_terms
Revises: 0025_purge_indexes
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026_instance_purge_terms"
down_revision: str | None = "0025_purge_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("web_instances", sa.Column("audit_retention_days", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("web_instances") as batch:
        batch.drop_column("audit_retention_days")
