"""Engine and session factory for Postgres (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import (
    BigInteger,
    Text,
    any_,
    bindparam,
    cast,
    event,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
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
from adapters.sql.errors import not_migrated, outage_state, translate
from adapters.sql.fair_pool import FairAsyncAdaptedQueuePool
from adapters.sql.repositories import _api_key, _link
from adapters.sql.tables import api_keys, user_links
from adapters.sql.uow import SqlUnitOfWork, WriterQueue
from domain import errors
from domain.model import AccountId, ApiKey, DiscordId, Link, LinkRow, scopes_from_text

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
        self.directory: SqlLinkDirectory | PostgresLinkDirectory = (
            SqlLinkDirectory(self)
            if self.dialect == "sqlite"
            else PostgresLinkDirectory(
                url,
                max_size=pool_size,
                acquire_timeout=pool_timeout,
                connect_args=_postgres_connect_args(
                    connect_timeout, statement_timeout, idle_in_transaction_timeout
                ),
            )
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
            if isinstance(self.directory, PostgresLinkDirectory):
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


def _asyncpg_sql(statement: Any) -> str:
    """A Core statement as the SQL asyncpg runs (``$1`` parameters), compiled once."""
    return str(statement.compile(dialect=asyncpg_dialect()))  # type: ignore[no-untyped-call]


# What a Link is made of, in _link_of's order (named: a new column changes nothing here), with
# ``linked_at`` (UTC without a zone) read as a timestamptz: asyncpg then makes the aware
# datetime itself, instead of Python replacing each row's zone.
_LINK_FIELDS = (
    "discord_id",
    "taskflow_user_id",
    "linked_at",
    "discord_username",
    "discord_global_name",
    "discord_avatar",
)
_LINK_COLUMNS = [
    func.timezone(literal_column("'UTC'"), user_links.c[name]).label(name)
    if name == "linked_at"
    else user_links.c[name]
    for name in _LINK_FIELDS
]
_LINK_BY_ID = _asyncpg_sql(select(*_LINK_COLUMNS).where(user_links.c.discord_id == bindparam("id")))
# What a bulk lookup answers of each link (a LinkRow), in _LINK_COLUMNS' way: no avatar, and
# the account's id as Postgres writes a uuid as text (as str() writes a UUID), which asyncpg
# reads as a str: a UUID object per row cost more to make, and more to write in the answer.
_LINK_ROW_FIELDS = _LINK_FIELDS[:5]
_LINK_ROWS_BY_IDS = _asyncpg_sql(
    select(
        *(
            cast(column, Text).label(column.name) if column.name == "taskflow_user_id" else column
            for column in _LINK_COLUMNS[:5]
        )
    ).where(user_links.c.discord_id == any_(bindparam("ids", type_=ARRAY(BigInteger()))))
)
_KEY_BY_DIGEST = _asyncpg_sql(select(api_keys).where(api_keys.c.key_hash == bindparam("digest")))


# What a connection the server (or the network) dropped looks like to asyncpg.
_BROKEN = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
)


class PostgresLinkDirectory:
    """``LinkDirectory`` on Postgres, the API's hot path, as a hand-written handler would do
    it: a few asyncpg connections of its own, and each call one prepared statement (compiled
    once from the tables) in one round trip, outside any transaction. SQLAlchemy's async layer
    costs a greenlet switch per step and its pool a ping per checkout; neither is needed to
    read one row.

    Nor is asyncpg's pool: a call takes a turn (one per connection, first come first served,
    see ``_fetch``), and with a turn there is always a connection for it, an idle one or a new
    one. asyncpg's pool started a task and a timer to check a connection out and another task
    to give it back, a fifth of a lookup's time in the driver. Connections open on first use,
    never at wiring time. One unused for ``max_idle_seconds`` is closed when it would be used
    next (no timer per connection), and one the server closed in the meantime fails its next
    statement, which is then tried once more on a fresh one."""

    def __init__(
        self,
        url: str,
        *,
        max_size: int,
        acquire_timeout: float,
        connect_args: dict[str, Any],
        max_idle_seconds: float = IDLE_LIFETIME,
    ) -> None:
        # asyncpg's arguments as SQLAlchemy's engine gives them (the URL's query too), not
        # the URL as a DSN: asyncpg reads a DSN's query otherwise (``ssl=require``, which the
        # engine takes, became a server setting the server refused at every connect).
        self._url_args = asyncpg_connect_args(url)
        self._max_size = max_size
        self._max_idle = max_idle_seconds
        self._acquire_timeout = acquire_timeout
        self._connect_args = connect_args
        # One turn per connection, taken first come first served (see _fetch).
        self._turns = asyncio.Semaphore(max_size)
        # Connections no call is using, with when each was given back (the last one given
        # back is used first, so the oldest are at the bottom), and the generation they
        # belong to: a connection of an older one (before a broken connection was seen, or
        # before close) is closed when it comes back.
        self._idle: list[tuple[float, asyncpg.Connection]] = []
        self._generation = 0

    async def _fetch(self, query: str, argument: object) -> list[Any]:
        for attempt in (1, 2):
            turns = self._turns  # given back to the one taken, should close() replace it
            # A connection this call uses is kept only while nothing has changed since it
            # asked (a close() while it waited for its turn, a broken connection seen).
            generation = self._generation
            try:
                # A turn first, first come first served: asyncpg's pool handed a freed
                # connection to whichever request asked next, and a request woken for it
                # could find it taken and go back to the end of the line (lookups waited up
                # to half a second while others were served in milliseconds).
                if turns.locked():  # (fair: true too while others wait for a turn)
                    async with asyncio.timeout(self._acquire_timeout):
                        await turns.acquire()
                else:
                    await turns.acquire()  # free: taken at once, no deadline (timer) needed
            except TimeoutError as exc:
                raise errors.StorageError() from exc
            try:
                rows = await self._fetch_on_a_connection(query, argument, generation)
            except _BROKEN as exc:
                # A connection the server closed (a restart, a failover): the idle ones were
                # most likely closed too. Each is replaced before its next use, and this read
                # is tried once more, on a fresh one.
                self._expire()
                if attempt == 2:
                    raise errors.StorageError() from exc
            else:
                return rows
            finally:
                turns.release()
        raise errors.StorageError()  # pragma: no cover - the loop returns or raises

    async def _fetch_on_a_connection(
        self, query: str, argument: object, generation: int
    ) -> list[Any]:
        """One read, with a turn held: on an idle connection or a new one (a broken
        connection: ``_BROKEN``)."""
        conn = self._idle_connection() or await self._connect()
        try:
            rows: list[Any] = await conn.fetch(query, argument)
        except TimeoutError as exc:  # before _BROKEN: TimeoutError is an OSError
            # No answer within the command timeout: a frozen or overloaded server, not a
            # closed connection. Not tried again (that would double the wait), and the other
            # connections are kept.
            conn.terminate()  # a statement cut off by the client leaves it unusable
            raise errors.StorageError() from exc
        except _BROKEN:
            # Before PostgresError: asyncpg's "closed in the middle of operation" is one.
            conn.terminate()
            raise
        except asyncpg.PostgresError as exc:
            # The server refused this statement; the connection is fine (no transaction).
            self._put_back(conn, generation)
            raise _translate_driver(exc) from exc
        except BaseException:
            # Cancelled mid-statement (or anything unforeseen): not reused.
            conn.terminate()
            raise
        self._put_back(conn, generation)
        return rows

    async def _connect(self) -> asyncpg.Connection:
        try:
            conn: asyncpg.Connection = await asyncpg.connect(
                **{**self._url_args, **self._connect_args}
            )
        except asyncpg.PostgresError as exc:
            raise _translate_driver(exc) from exc
        except (OSError, TimeoutError, asyncpg.InterfaceError) as exc:
            raise errors.StorageError() from exc
        return conn

    def _idle_connection(self) -> asyncpg.Connection | None:
        """The connection given back last, unless it sat unused too long: then it and every
        one given back before it are closed."""
        if not self._idle:
            return None
        since, conn = self._idle.pop()
        if time.monotonic() - since < self._max_idle:
            return conn
        stale, self._idle = self._idle, []  # given back earlier still
        for _, old in stale:
            old.terminate()
        conn.terminate()
        return None

    def _put_back(self, conn: asyncpg.Connection, generation: int) -> None:
        if generation == self._generation and not conn.is_closed():
            self._idle.append((time.monotonic(), conn))
        else:
            conn.terminate()

    def _expire(self) -> None:
        """Every idle connection closed, and those in use when they come back."""
        self._generation += 1
        idle, self._idle = self._idle, []
        for _, conn in idle:
            conn.terminate()

    async def close(self) -> None:
        self._generation += 1  # those in use are closed when they come back
        idle, self._idle = [conn for _, conn in self._idle], []
        self._turns = asyncio.Semaphore(self._max_size)  # the next event loop's
        try:
            # Together, within one deadline: a server that does not answer cannot hold the
            # shutdown (nor, one after another, ten times over).
            async with asyncio.timeout(CLOSE_WITHIN):
                await asyncio.gather(*(conn.close() for conn in idle), return_exceptions=True)
        except TimeoutError:
            pass
        finally:
            for conn in idle:
                if not conn.is_closed():
                    conn.terminate()

    async def link_by_discord_id(self, discord_id: DiscordId) -> Link | None:
        rows = await self._fetch(_LINK_BY_ID, discord_id.value)
        return _link_of(rows[0]) if rows else None

    async def link_rows_by_discord_ids(self, discord_ids: Sequence[int]) -> Sequence[LinkRow]:
        if not discord_ids:
            return []
        # The records as tuples (their fields by position, _LINK_ROW_FIELDS): a C loop.
        return list(map(tuple, await self._fetch(_LINK_ROWS_BY_IDS, discord_ids)))

    async def api_key_by_digest(self, digest: str) -> ApiKey | None:
        rows = await self._fetch(_KEY_BY_DIGEST, digest)
        if not rows:
            return None
        return _api_key_of(rows[0])


def _utc(value: datetime | None) -> datetime | None:
    """What ``UtcDateTime`` does for the ORM: the columns hold UTC without a zone."""
    return None if value is None else value.replace(tzinfo=UTC)


def _api_key_of(row: Any) -> ApiKey:
    created_at = _utc(row["created_at"])
    assert created_at is not None  # noqa: S101 - NOT NULL
    return ApiKey(
        row["id"],
        row["name"],
        row["key_hash"],
        created_at,
        _utc(row["revoked_at"]),
        scopes=scopes_from_text(row["scopes"]),
        expires_at=_utc(row["expires_at"]),
        last_used_at=_utc(row["last_used_at"]),
    )


def _link_of(row: Any) -> Link:
    # By position (_LINK_FIELDS).
    discord_id, account_id, linked_at, username, global_name, avatar = row
    # linked_at: aware, UTC (read as a timestamptz, see _LINK_COLUMNS).
    return Link(
        DiscordId(discord_id),
        AccountId(account_id),
        linked_at,
        username,
        global_name,
        avatar,
    )


def _translate_driver(exc: asyncpg.PostgresError) -> errors.DomainError:
    """A statement timeout or a server shutting down is an outage, a missing table or column
    the schema not upgraded yet; anything else a fault."""
    if (not_ready := not_migrated(exc)) is not None:
        return not_ready
    return errors.StorageError() if outage_state(exc) else errors.StorageFault()


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
