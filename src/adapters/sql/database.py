"""Engine and session factory for Postgres (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, select, text
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)

from adapters.queue_listener import QueueBell
from adapters.sql.errors import translate
from adapters.sql.fair_pool import FairAsyncAdaptedQueuePool
from adapters.sql.repositories import _api_key, _link
from adapters.sql.tables import api_keys, user_links
from adapters.sql.uow import SqlUnitOfWork, WriterQueue
from domain.model import ApiKey, DiscordId, Link, LinkRow

if TYPE_CHECKING:
    from adapters.sql.postgres_directory import PostgresLinkDirectory

log = logging.getLogger("taskflow_link.database")

SQLITE_BUSY_TIMEOUT_MS = 15_000
CLOSE_WITHIN = 5.0  # seconds for the directory's connections to close before they are cut
# Seconds a directory connection may sit unused and still be used again (then it is closed
# and replaced): a firewall or NAT that forgets idle connections drops them silently, and a
# statement on one would hang until the command timeout.
IDLE_LIFETIME = 300.0
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
        idle_in_transaction_timeout: float | None = None,
        sqlite_busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
        sqlite_writer_wait: float | None = None,
        bell: QueueBell | None = None,
    ) -> None:
        """``statement_timeout`` (Postgres): the server cuts off a statement running longer,
        and the client gives up waiting a moment later (a server that hangs answers nothing);
        either way the caller gets a ``StorageError``, never an endless wait.
        ``idle_in_transaction_timeout`` (Postgres): the server ends a transaction that sends
        nothing for that long, and with it the locks it holds: a process that froze or lost
        its network inside one kept them until TCP keepalives gave up on it (hours), and every
        other instance that needed those rows failed meanwhile.
        ``sqlite_writer_wait``: how long a writer waits for its turn (default: the busy
        timeout). ``bell``: rung when a committed transaction queued work (this process's
        workers listen to it)."""
        self.bell = bell or QueueBell()
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        # No pre-ping: SQLAlchemy's costs three round trips (BEGIN, a query, ROLLBACK) on
        # every checkout. A connection the server closed fails its next statement instead;
        # SQLAlchemy then drops every pooled connection made before (a restarted database
        # costs the requests in flight, not one per pooled connection).
        # hide_parameters: a statement's error (logged with its cause: a failed pass, a 500)
        # leaves its bound values out, addresses and digests among them.
        options: dict[str, Any] = {"pool_pre_ping": False, "hide_parameters": True}
        if self.dialect == "sqlite":
            options["connect_args"] = {"timeout": sqlite_busy_timeout_ms / 1000}
        else:
            options.update(
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_timeout=pool_timeout,
                connect_args=_postgres_connect_args(
                    connect_timeout, statement_timeout, idle_in_transaction_timeout
                ),
                pool_recycle=1800,  # before idle-connection timeouts of proxies and servers
                poolclass=FairAsyncAdaptedQueuePool,  # first come first served (see fair_pool)
            )
        self.engine: AsyncEngine = create_async_engine(parsed, **options)
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine, sqlite_busy_timeout_ms, sqlite_file(parsed))
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        wait = sqlite_busy_timeout_ms / 1000 if sqlite_writer_wait is None else sqlite_writer_wait
        self._writers = WriterQueue(wait) if self.dialect == "sqlite" else None
        self._read_sessions = async_sessionmaker(
            self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False
        )
        self.directory: SqlLinkDirectory | PostgresLinkDirectory
        if self.dialect == "sqlite":
            self.directory = SqlLinkDirectory(self)
        else:
            # asyncpg itself, loaded only for Postgres (SQLAlchemy's dialect loads it when the
            # engine first connects): a process on SQLite never needs it.
            from adapters.sql.postgres_directory import PostgresLinkDirectory  # noqa: PLC0415

            self.directory = PostgresLinkDirectory(
                url,
                max_size=pool_size,
                acquire_timeout=pool_timeout,
                connect_args=_postgres_connect_args(
                    connect_timeout, statement_timeout, idle_in_transaction_timeout
                ),
            )

    def unit_of_work(self, *, read_only: bool = False) -> SqlUnitOfWork:
        if read_only:
            return SqlUnitOfWork(self._read_sessions, read_only=True)
        return SqlUnitOfWork(
            self.sessions,
            postgres=self.dialect == "postgresql",
            writers=self._writers,
            bell=self.bell,
        )

    @contextlib.asynccontextmanager
    async def writer_turn(self) -> AsyncIterator[None]:
        """This process's turn to write, for a write made on the engine itself, not through
        a unit of work: on SQLite its writers take turns (``WriterQueue``); on Postgres there
        is nothing to wait for. ``StorageError`` when the turn does not come in time."""
        if self._writers is None:
            yield
            return
        turn = await self._writers.wait_turn()
        try:
            yield
        finally:
            turn.release()

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
        """Every connection closed. Cut off (the shutdown's timeout, a database that does not
        answer the goodbye), the pool's log says nothing of it: SQLAlchemy logged the
        cancelled close of each connection back in the pool as an error with a traceback,
        while the cut is the shutdown's own, said once by whoever made it."""
        pool_log = _logger_of(self.engine.pool)
        quiet = _NoCancelledCloses()
        pool_log.addFilter(quiet)
        try:
            if not isinstance(self.directory, SqlLinkDirectory):  # Postgres's own connections
                await self.directory.close()
        finally:
            try:
                await self.engine.dispose()
            finally:
                pool_log.removeFilter(quiet)


class _NoCancelledCloses(logging.Filter):
    """Drops the pool's "Exception closing connection" for a close that was cancelled."""

    def filter(self, record: logging.LogRecord) -> bool:
        cause = record.exc_info[1] if record.exc_info else None
        return not isinstance(cause, asyncio.CancelledError)


def _logger_of(pool: Any) -> logging.Logger:
    """The logger a SQLAlchemy pool logs to (its class's, or with ``echo_pool`` the one its
    wrapper holds): a filter on a parent logger sees none of its records."""
    logger = pool.logger
    return logger if isinstance(logger, logging.Logger) else logger.logger


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

    async def link_rows_by_discord_ids(self, discord_ids: Sequence[int]) -> Sequence[LinkRow]:
        if not discord_ids:
            return []
        columns = [user_links.c[name] for name in _LINK_ROW_FIELDS]
        rows = await self._all(select(*columns).where(user_links.c.discord_id.in_(discord_ids)))
        return [(d, str(a), t, u, g) for d, a, t, u, g in rows]

    async def api_key_by_digest(self, digest: str) -> ApiKey | None:
        rows = await self._all(select(api_keys).where(api_keys.c.key_hash == digest))
        return _api_key(rows[0]) if rows else None


# What a Link is made of, in the directories' order (named: a new column changes nothing
# there), and what a bulk lookup answers of each link (a LinkRow): no avatar.
_LINK_FIELDS = (
    "discord_id",
    "taskflow_user_id",
    "linked_at",
    "discord_username",
    "discord_global_name",
    "discord_avatar",
)
_LINK_ROW_FIELDS = _LINK_FIELDS[:5]


def asyncpg_connect_args(url: str) -> dict[str, Any]:
    """What SQLAlchemy's asyncpg dialect passes to ``asyncpg.connect`` for ``url`` (host,
    port, user, password, database and the query's parameters), without the engine's own
    options."""
    _, args = asyncpg_dialect().create_connect_args(make_url(url))  # type: ignore[no-untyped-call]
    for engine_only in ("prepared_statement_cache_size", "prepared_statement_name_func"):
        args.pop(engine_only, None)
    return dict(args)


def _postgres_connect_args(
    connect_timeout: float,
    statement_timeout: float | None,
    idle_in_transaction_timeout: float | None = None,
) -> dict[str, Any]:
    args: dict[str, Any] = {"timeout": connect_timeout}
    server: dict[str, str] = {}
    if statement_timeout is not None:
        server["statement_timeout"] = str(int(statement_timeout * 1000))
        # asyncpg's own deadline for every command: the server's timer cannot fire when the
        # server itself is frozen (or the network to it is gone).
        args["command_timeout"] = statement_timeout + 1.0
    if idle_in_transaction_timeout is not None:
        milliseconds = max(1, int(idle_in_transaction_timeout * 1000))  # 0 would be "never"
        server["idle_in_transaction_session_timeout"] = str(milliseconds)
    if server:
        args["server_settings"] = server
    return args


def sqlite_file(url: URL) -> str | None:
    """The file a SQLite URL opens and SQLite would create, if any: not an in-memory database,
    nor a URI filename or a ``mode`` other than ``rwc`` (those say themselves what to open)."""
    database = url.database
    if not database or database == ":memory:" or "uri" in url.query:
        return None
    return database if url.query.get("mode", "rwc") == "rwc" else None


def _create_private_file(path: str) -> None:
    """Create the database file readable and writable by its owner only, before SQLite opens
    it: SQLite would create it with the process umask (0644, as a rule: any local user could
    read the accounts, the audit trail and the sealed tokens), and gives its -wal and -shm files
    the database file's mode. A file that exists keeps its mode.

    A path SQLite cannot open as a file (its directory missing, a directory itself) is said
    here, as an ``OSError``, before SQLite tries: aiosqlite's thread, failing to open it,
    could outlive a short-lived event loop (a CLI command's) and print "Event loop is closed"
    as tracebacks. Other errors (no permission) are SQLite's to report."""
    if os.path.isdir(path):
        raise OSError(f"{path} is a directory, not a database file")
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise OSError(f"there is no directory {directory} to hold the database file")
    with contextlib.suppress(OSError):  # FileExistsError among them: left as it is
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _warn_if_shared(path: str) -> None:
    with contextlib.suppress(OSError):
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            log.warning(
                "The SQLite database %s can be read or written by other users (mode %o): "
                "run chmod 600 on it and on its -wal and -shm files",
                path,
                mode,
            )


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int, path: str | None) -> None:
    """WAL, a busy timeout, foreign keys, and writer transactions from the start; a file that
    is not there yet is created readable by its owner only (a warning, once, when the file
    exists and others may read it).

    ``BEGIN IMMEDIATE`` takes the write lock when a transaction begins, so two concurrent
    read-then-write transactions queue on the busy timeout instead of deadlocking (SQLite's
    default deferred BEGIN fails one of them at once with "database is locked"). Transactions
    that only read begin deferred: in WAL mode they read a snapshot beside the writer.
    """
    if path is not None:
        warned = False

        @event.listens_for(engine.sync_engine, "do_connect")
        def _before_connect(*_: Any) -> None:
            nonlocal warned
            _create_private_file(path)
            if not warned:
                warned = True
                _warn_if_shared(path)

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
