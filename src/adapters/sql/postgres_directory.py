"""The link directory on Postgres (the JSON API's hot path), on asyncpg's connections of its
own: loaded only with a Postgres URL, so a process on SQLite never loads asyncpg."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import BigInteger, Text, any_, bindparam, cast, func, literal_column, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

from adapters.sql.database import _LINK_FIELDS, CLOSE_WITHIN, IDLE_LIFETIME, asyncpg_connect_args
from adapters.sql.errors import not_migrated, outage_state
from adapters.sql.tables import api_keys, user_links
from domain import errors
from domain.model import AccountId, ApiKey, DiscordId, Link, LinkRow, scopes_from_text


def _asyncpg_sql(statement: Any) -> str:
    """A Core statement as the SQL asyncpg runs (``$1`` parameters), compiled once."""
    return str(statement.compile(dialect=asyncpg_dialect()))  # type: ignore[no-untyped-call]


# What a Link is made of, in _link_of's order (named: a new column changes nothing here), with
# ``linked_at`` (UTC without a zone) read as a timestamptz: asyncpg then makes the aware
# datetime itself, instead of Python replacing each row's zone.
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
