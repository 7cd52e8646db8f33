"""Reading the audit trail (``taskflow-link audit``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from domain import errors
from domain.model import AccountId, AuditEvent, DiscordId
from domain.ports import Clock, TokenIssuer, UnitOfWorkFactory
from domain.use_cases.accounts import keyed_login

MAX_AUDIT_EVENTS = 10_000


class ReadAuditTrail:
    """The newest events, filtered by account, Discord id or the login a failed sign-in was
    tried with, and by age, oldest first (the newest is the last line, as in a log)."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, tokens: TokenIssuer) -> None:
        self._uow, self._clock, self._tokens = uow, clock, tokens

    async def execute(
        self,
        *,
        account_id: AccountId | None = None,
        discord_id: DiscordId | None = None,
        login: str | None = None,
        since: datetime | timedelta | None = None,
        limit: int = 100,
    ) -> Sequence[AuditEvent]:
        """``since``: a moment, or how far back from now. ``login``: as typed at sign-in
        (any case), found under the server's key as ``SignIn`` records it; the events
        recorded under another key (before it changed) are not found."""
        if not 1 <= limit <= MAX_AUDIT_EVENTS:
            raise errors.InvalidInput(f"The limit is 1 to {MAX_AUDIT_EVENTS} events.")
        if login is not None and not login.strip():
            raise errors.InvalidInput("Give the login as it was typed to sign in.")
        if isinstance(since, timedelta):
            since = self._clock.now() - since
        keyed = keyed_login(self._tokens, login) if login is not None else None
        async with self._uow(read_only=True) as uow:
            newest_first = await uow.audit.search(
                account_id=account_id,
                discord_id=discord_id,
                login=keyed,
                since=since,
                limit=limit,
            )
        return list(reversed(newest_first))
