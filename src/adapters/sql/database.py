"""Engine and session factory for Postgres (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import BigInteger, any_, bindparam, event, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
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
from domain import errors
from domain.model import AccountId, ApiKey, DiscordId, Link

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
        statement_timeout: float | None = None,
        sqlite_busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
    ) -> None:
        """``statement_timeout`` (Postgres): the server cuts off a statement running longer,
        and the client gives up waiting a moment later (a server that hangs answers nothing);
        either way the caller gets a ``StorageError``, never an endless wait."""
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        # No pre-ping: SQLAlchemy's costs three round trips (BEGIN, a query, ROLLBACK) on
        # every checkout, more than the lookup it guards. A connection the server closed fails
        # its next statement instead; SQLAlchemy then drops every pooled connection made before
        # (a restarted database costs the requests in flight, not one per pooled connection),
        # and the directory's reads retry once on a fresh one.
        options: dict[str, Any] = {"pool_pre_ping": False}
        if self.dialect == "sqlite":
            options["connect_args"] = {"timeout": sqlite_busy_timeout_ms / 1000}
        else:
            options.update(
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_timeout=pool_timeout,
                connect_args=_postgres_connect_args(connect_timeout, statement_timeout),
                pool_recycle=1800,  # before idle-connection timeouts of proxies and servers
            )
        self.engine: AsyncEngine = create_async_engine(parsed, **options)
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine, sqlite_busy_timeout_ms)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = async_sessionmaker(
            self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False
        )
        self.directory: SqlLinkDirectory | PostgresLinkDirectory = (
            SqlLinkDirectory(self) if self.dialect == "sqlite" else PostgresLinkDirectory(self)
        )

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

    @property
    def shared_between_processes(self) -> bool:
        """A database server or file is; an in-memory SQLite database is one process's."""
        database = self.engine.url.database
        return not (self.dialect == "sqlite" and database in (None, "", ":memory:"))

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


def _asyncpg_sql(statement: Any) -> str:
    """A Core statement as the SQL asyncpg runs (``$1`` parameters), compiled once."""
    return str(statement.compile(dialect=asyncpg_dialect()))  # type: ignore[no-untyped-call]


_LINK_BY_ID = _asyncpg_sql(select(user_links).where(user_links.c.discord_id == bindparam("id")))
_LINKS_BY_IDS = _asyncpg_sql(
    select(user_links).where(
        user_links.c.discord_id == any_(bindparam("ids", type_=ARRAY(BigInteger())))
    )
)
_KEY_BY_DIGEST = _asyncpg_sql(select(api_keys).where(api_keys.c.key_hash == bindparam("digest")))


class PostgresLinkDirectory:
    """``LinkDirectory`` on Postgres, the API's hot path: each call is one prepared statement
    sent straight through asyncpg on a pooled connection (no transaction, no SQL compilation,
    no result processing): one round trip, as a hand-written handler would make."""

    def __init__(self, database: SqlDatabase) -> None:
        self._database = database

    async def _fetch(self, query: str, argument: object) -> list[Any]:
        for attempt in (1, 2):
            try:
                async with self._database.engine.connect() as conn:
                    raw = await conn.get_raw_connection()
                    driver = raw.driver_connection
                    assert driver is not None  # noqa: S101 - a checked-out connection has one
                    try:
                        rows: list[Any] = await driver.fetch(query, argument)
                    except Exception:
                        if driver.is_closed():  # the server closed it: never reuse it
                            await conn.invalidate()
                            if attempt == 1:
                                continue  # once more, on a fresh connection
                        raise
                    return rows
            except (SQLAlchemyError, OSError, TimeoutError) as exc:
                raise translate(exc) from exc
            except asyncpg.PostgresError as exc:
                raise _translate_driver(exc) from exc
            except asyncpg.InterfaceError as exc:
                raise errors.StorageError() from exc
        raise errors.StorageError()  # pragma: no cover - the loop returns or raises

    async def link_by_discord_id(self, discord_id: DiscordId) -> Link | None:
        rows = await self._fetch(_LINK_BY_ID, discord_id.value)
        return _link_of(rows[0]) if rows else None

    async def links_by_discord_ids(self, discord_ids: Sequence[DiscordId]) -> Sequence[Link]:
        if not discord_ids:
            return []
        rows = await self._fetch(_LINKS_BY_IDS, [d.value for d in discord_ids])
        return [_link_of(row) for row in rows]

    async def api_key_by_digest(self, digest: str) -> ApiKey | None:
        rows = await self._fetch(_KEY_BY_DIGEST, digest)
        if not rows:
            return None
        row = rows[0]
        created_at = _utc(row["created_at"])
        assert created_at is not None  # noqa: S101 - NOT NULL
        return ApiKey(row["id"], row["name"], row["key_hash"], created_at, _utc(row["revoked_at"]))


def _utc(value: datetime | None) -> datetime | None:
    """What ``UtcDateTime`` does for the ORM: the columns hold UTC without a zone."""
    return None if value is None else value.replace(tzinfo=UTC)


def _link_of(row: Any) -> Link:
    linked_at = _utc(row["linked_at"])
    assert linked_at is not None  # noqa: S101 - NOT NULL
    return Link(
        DiscordId(row["discord_id"]),
        AccountId(row["taskflow_user_id"]),
        linked_at,
        row["discord_username"],
        row["discord_global_name"],
        row["discord_avatar"],
    )


def _translate_driver(exc: asyncpg.PostgresError) -> errors.DomainError:
    """A statement timeout or a server shutting down is an outage; anything else a fault."""
    outage = (
        asyncpg.QueryCanceledError,
        asyncpg.CannotConnectNowError,
        asyncpg.AdminShutdownError,
        asyncpg.TooManyConnectionsError,
    )
    return errors.StorageError() if isinstance(exc, outage) else errors.StorageFault()


def _postgres_connect_args(
    connect_timeout: float, statement_timeout: float | None
) -> dict[str, Any]:
    args: dict[str, Any] = {"timeout": connect_timeout}
    if statement_timeout is not None:
        args["server_settings"] = {"statement_timeout": str(int(statement_timeout * 1000))}
        # asyncpg's own deadline for every command: the server's timer cannot fire when the
        # server itself is frozen (or the network to it is gone).
        args["command_timeout"] = statement_timeout + 1.0
    return args


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
