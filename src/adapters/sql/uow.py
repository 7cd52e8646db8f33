"""Unit of work on one ``AsyncSession``: rolls back unless committed; driver errors become
the domain's ``Conflict`` (uniqueness, foreign keys) or ``StorageError`` (anything else)."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from types import TracebackType
from typing import Self

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.queue_listener import QueueBell
from adapters.sql.errors import translate
from adapters.sql.repositories import (
    SqlAccounts,
    SqlApiKeys,
    SqlAudit,
    SqlDeclinedAddresses,
    SqlEmailTokens,
    SqlLinkProposals,
    SqlLinks,
    SqlLinkTickets,
    SqlMaintenance,
    SqlOutgoingEmails,
    SqlPendingLogins,
    SqlRoleChanges,
    SqlRoleConnectionTokens,
    SqlSessions,
    SqlWebhooks,
)
from domain import errors


class WriterQueue:
    """SQLite has one writer at a time. Left to SQLite, waiting writers poll its lock with
    sleeps of up to 100 ms (its busy handler), so 16 concurrent writes took seconds; in turn
    through an asyncio lock (one per event loop), the next one starts as soon as the last one
    ends. Past ``timeout`` seconds a writer gives up as SQLite would (database busy). Other
    processes on the same file still meet SQLite's own lock."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    async def wait_turn(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        try:
            async with asyncio.timeout(self._timeout):
                await lock.acquire()
        except TimeoutError as exc:
            raise errors.StorageError() from exc
        return lock


class SqlUnitOfWork:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        read_only: bool = False,
        postgres: bool = False,
        writers: WriterQueue | None = None,
        bell: QueueBell | None = None,
    ) -> None:
        """``postgres``: the repositories may use what only Postgres has (SKIP LOCKED,
        LISTEN/NOTIFY). ``writers`` (SQLite): writing units of work of this process take
        turns (see ``WriterQueue``). ``bell``: rung after a commit that queued work."""
        self._read_only = read_only
        self._bell = bell
        self._rings: set[str] = set()  # the queues written to since the last commit
        self._writers = None if read_only else writers
        self._turn: asyncio.Lock | None = None
        self._session = sessions()
        self.accounts = SqlAccounts(self._session)
        self.links = SqlLinks(self._session)
        self.pending_logins = SqlPendingLogins(self._session)
        self.link_tickets = SqlLinkTickets(self._session, postgres=postgres)
        self.sessions = SqlSessions(self._session)
        self.api_keys = SqlApiKeys(self._session)
        self.audit = SqlAudit(self._session)
        self.email_tokens = SqlEmailTokens(self._session)
        session, rings = self._session, self._rings
        self.outgoing_emails = SqlOutgoingEmails(session, postgres=postgres, rings=rings)
        self.declined_addresses = SqlDeclinedAddresses(session, postgres=postgres)
        self.link_proposals = SqlLinkProposals(self._session)
        self.role_changes = SqlRoleChanges(session, postgres=postgres, rings=rings)
        self.webhooks = SqlWebhooks(session, postgres=postgres, rings=rings)
        self.role_connection_tokens = SqlRoleConnectionTokens(
            session, postgres=postgres, rings=rings
        )
        self.maintenance = SqlMaintenance(session, postgres=postgres)

    async def __aenter__(self) -> Self:
        if self._writers is not None:
            self._turn = await self._writers.wait_turn()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.rollback()
        finally:
            try:
                await self._session.close()
            finally:
                if self._turn is not None:
                    self._turn.release()
                    self._turn = None

    async def commit(self) -> None:
        if self._read_only:
            raise RuntimeError("a read-only unit of work cannot commit")
        rung = frozenset(self._rings)  # rung only once committed
        self._rings.clear()
        try:
            await self._session.commit()
        except IntegrityError as exc:
            await self._session.rollback()
            raise errors.Conflict() from exc
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise translate(exc) from exc
        if rung and self._bell is not None:
            self._bell.ring(rung)

    async def rollback(self) -> None:
        self._rings.clear()
        # If the connection is gone there is nothing left to roll back; the pool drops it.
        with contextlib.suppress(SQLAlchemyError, OSError, TimeoutError):
            await self._session.rollback()
