"""``taskflow-link role-connections status``: how the kept Linked Roles connections stand,
and which linked members lost theirs, for an operator. Counts and Discord ids only: never a
token, nor an email address."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.model import (
    AuditKind,
    LostRoleConnection,
    RoleConnectionCounts,
    RoleConnectionLossCount,
)
from domain.ports import Clock, SecretBox, UnitOfWorkFactory
from domain.use_cases.role_connections import GIVEN_UP, every_row


@dataclass(frozen=True, slots=True)
class RoleConnectionStatus:
    counts: RoleConnectionCounts
    # Kept tokens sealed with a key not configured here (in any of the counts): left to an
    # instance that has it. ``None``: no key is configured here, so it cannot be told.
    key_missing: int | None
    losses: Sequence[RoleConnectionLossCount]
    lost: Sequence[LostRoleConnection]  # the longest lost first, as many as asked for
    given_up: int  # tokens deleted since ``since``: unlinked, Discord failing for a week
    since: datetime


class ShowRoleConnectionStatus:
    """Reads only. ``box``: the configured keys (``None`` when there are none), asked only
    which key each row names, never to open one."""

    def __init__(
        self, uow: UnitOfWorkFactory, clock: Clock, box: SecretBox | None, page_size: int = 500
    ) -> None:
        self._uow, self._clock, self._box, self._page = uow, clock, box, page_size

    async def execute(self, *, since: datetime | timedelta, lost: int = 0) -> RoleConnectionStatus:
        """``since``: a moment, or how far back from now, for the tokens given up. ``lost``:
        how many lost members to list (the longest lost first)."""
        now = self._clock.now()
        if isinstance(since, timedelta):
            since = now - since
        async with self._uow(read_only=True) as uow:
            counts = await uow.role_connection_tokens.counts(now)
            losses = await uow.links.role_connection_losses()
            listed = await uow.links.lost_role_connections(lost) if lost > 0 else []
            reasons = await uow.audit.reasons_since(AuditKind.ROLE_TOKENS_DELETED, since)
        return RoleConnectionStatus(
            counts=counts,
            key_missing=await self._key_missing(),
            losses=losses,
            lost=listed,
            given_up=reasons.get(GIVEN_UP, 0),
            since=since,
        )

    async def _key_missing(self) -> int | None:
        box = self._box
        if box is None:
            return None
        missing = 0
        async for row in every_row(self._uow, self._page):
            missing += not box.has_key(row.sealed)
        return missing
