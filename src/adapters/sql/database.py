"""Engine and session factory for Postgres (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import event, select, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)

from adapters.sql.errors import translate
from adapters.sql.repositories import _api_key, _link
from adapters.sql.tables import api_keys, user_links
from adapters.sql.uow import SqlUnitOfWork
from domain.model import ApiKey, DiscordId, Link

SQLITE_BUSY_TIMEOUT_MS = 15_000
# An execution option our SQLite "begin" hook reads: a read-only transaction starts deferred.
READ_ONLY = "taskflow_read_only"


class SqlDatabase:
    """Owns the engine; creating one does not connect (no work at import or wiring time)."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        max_overflow: int = 10,
        pool_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        sqlite_busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
    ) -> None:
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        options: dict[str, Any] = {"pool_pre_ping": True}
        if self.dialect == "sqlite":
            options["connect_args"] = {"timeout": sqlite_busy_timeout_ms / 1000}
        else:
            options.update(
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_timeout=pool_timeout,
                connect_args={"timeout": connect_timeout},
            )
        self.engine: AsyncEngine = create_async_engine(parsed, **options)
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine, sqlite_busy_timeout_ms)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = async_sessionmaker(
            self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False
        )
        self.directory = SqlLinkDirectory(self)

    def unit_of_work(self, *, read_only: bool = False) -> SqlUnitOfWork:
        if read_only:
            return SqlUnitOfWork(self._read_sessions, read_only=True)
        return SqlUnitOfWork(self.sessions, postgres=self.dialect == "postgresql")

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        """A connection for single statements outside any transaction: on Postgres in
        autocommit (no BEGIN/ROLLBACK around the query: one round trip), on SQLite a deferred
        read that takes no write lock."""
        async with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                yield await conn.execution_options(**{READ_ONLY: True})
            else:
                yield await conn.execution_options(isolation_level="AUTOCOMMIT")

    async def ping(self) -> bool:
        """``True`` when the database answers a trivial query."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()


class SqlLinkDirectory:
    """``LinkDirectory`` on the database: one statement per call, outside any transaction."""

    def __init__(self, database: SqlDatabase) -> None:
        self._database = database

    async def _all(self, statement: Any) -> Sequence[Any]:
        try:
            async with self._database.reading() as conn:
                return (await conn.execute(statement)).all()
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise translate(exc) from exc

    async def link_by_discord_id(self, discord_id: DiscordId) -> Link | None:
        rows = await self._all(
            select(user_links).where(user_links.c.discord_id == discord_id.value)
        )
        return _link(rows[0]) if rows else None

    async def links_by_discord_ids(self, discord_ids: Sequence[DiscordId]) -> Sequence[Link]:
        if not discord_ids:
            return []
        wanted = [d.value for d in discord_ids]
        rows = await self._all(select(user_links).where(user_links.c.discord_id.in_(wanted)))
        return [_link(row) for row in rows]

    async def api_key_by_digest(self, digest: str) -> ApiKey | None:
        rows = await self._all(select(api_keys).where(api_keys.c.key_hash == digest))
        return _api_key(rows[0]) if rows else None


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    """WAL, a busy timeout, foreign keys, and writer transactions from the start.

    ``BEGIN IMMEDIATE`` takes the write lock when a transaction begins, so two concurrent
    read-then-write transactions queue on the busy timeout instead of deadlocking (SQLite's
    default deferred BEGIN fails one of them at once with "database is locked"). Transactions
    that only read begin deferred: in WAL mode they read a snapshot beside the writer.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
