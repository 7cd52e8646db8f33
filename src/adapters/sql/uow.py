"""Unit of work on one ``AsyncSession``: rolls back unless committed; driver errors become
the domain's ``Conflict`` (uniqueness, foreign keys) or ``StorageError`` (anything else)."""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Self

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.sql.errors import translate
from adapters.sql.repositories import (
    SqlAccounts,
    SqlApiKeys,
    SqlAudit,
    SqlEmailTokens,
    SqlLinkProposals,
    SqlLinks,
    SqlLinkTickets,
    SqlOutgoingEmails,
    SqlPendingLogins,
    SqlSessions,
    SqlWebhooks,
)
from domain import errors


class SqlUnitOfWork:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        read_only: bool = False,
        postgres: bool = False,
    ) -> None:
        """``postgres``: the repositories may use what only Postgres has (SKIP LOCKED,
        LISTEN/NOTIFY)."""
        self._read_only = read_only
        self._session = sessions()
        self.accounts = SqlAccounts(self._session)
        self.links = SqlLinks(self._session)
        self.pending_logins = SqlPendingLogins(self._session)
        self.link_tickets = SqlLinkTickets(self._session)
        self.sessions = SqlSessions(self._session)
        self.api_keys = SqlApiKeys(self._session)
        self.audit = SqlAudit(self._session)
        self.email_tokens = SqlEmailTokens(self._session)
        self.outgoing_emails = SqlOutgoingEmails(self._session, postgres=postgres)
        self.link_proposals = SqlLinkProposals(self._session)
        self.webhooks = SqlWebhooks(self._session, postgres=postgres)

    async def __aenter__(self) -> Self:
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
            await self._session.close()

    async def commit(self) -> None:
        if self._read_only:
            raise RuntimeError("a read-only unit of work cannot commit")
        try:
            await self._session.commit()
        except IntegrityError as exc:
            await self._session.rollback()
            raise errors.Conflict() from exc
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise translate(exc) from exc

    async def rollback(self) -> None:
        # If the connection is gone there is nothing left to roll back; the pool drops it.
        with contextlib.suppress(SQLAlchemyError, OSError, TimeoutError):
            await self._session.rollback()
