from __future__ import annotations

from dataclasses import dataclass

from domain.ports import Clock, UnitOfWorkFactory


@dataclass(frozen=True, slots=True)
class PurgeReport:
    pending_logins: int
    link_tickets: int
    sessions: int


class PurgeExpired:
    """Delete expired pending logins, tickets and sessions (``taskflow-link purge-expired``)."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def execute(self) -> PurgeReport:
        now = self._clock.now()
        async with self._uow() as uow:
            report = PurgeReport(
                await uow.pending_logins.purge_expired(now),
                await uow.link_tickets.purge_expired(now),
                await uow.sessions.purge_expired(now),
            )
            await uow.commit()
        return report
