"""SQLAlchemy adapters: Postgres (asyncpg) in production, SQLite (aiosqlite) embedded."""

from adapters.sql.database import SqlDatabase
from adapters.sql.uow import SqlUnitOfWork

__all__ = ["SqlDatabase", "SqlUnitOfWork"]
