"""Alembic environment. Migrations run through ``adapters.sql.migrate`` (and so through
``taskflow-link db upgrade``), which hands over an open connection."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from adapters.sql.tables import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("Run migrations with `taskflow-link db upgrade`, not the alembic CLI.")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite's ALTER TABLE is limited
    compare_type=True,
    compare_server_default=False,
)
with context.begin_transaction():
    context.run_migrations()
