"""Reading the audit trail (``taskflow-link audit``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from domain import errors
from domain.model import AccountId, AuditEvent, DiscordId
from domain.ports import Clock, UnitOfWorkFactory

MAX_AUDIT_EVENTS = 10_000


class ReadAuditTrail:
    """The newest events, filtered by account or Discord id and by age, oldest first (the
    newest is the last line, as in a log)."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def execute(
        self,
        *,
        account_id: AccountId | None = None,
        discord_id: DiscordId | None = None,
        since: datetime | timedelta | None = None,
        limit: int = 100,
    ) -> Sequence[AuditEvent]:
        """``since``: a moment, or how far back from now."""
        if not 1 <= limit <= MAX_AUDIT_EVENTS:
            raise errors.InvalidInput(f"The limit is 1 to {MAX_AUDIT_EVENTS} events.")
        if isinstance(since, timedelta):
            since = self._clock.now() - since
        async with self._uow(read_only=True) as uow:
            newest_first = await uow.audit.search(
                account_id=account_id, discord_id=discord_id, since=since, limit=limit
            )
        return list(reversed(newest_first))
