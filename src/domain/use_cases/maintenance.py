from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from domain.ports import Clock, UnitOfWorkFactory

# Sent, failed and cancelled emails stay this long: the account page and support can see them.
KEEP_FINISHED_EMAILS = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class PurgeReport:
    pending_logins: int
    link_tickets: int
    sessions: int
    email_tokens: int = 0
    emails: int = 0
    link_proposals: int = 0


class PurgeExpired:
    """Delete expired one-time secrets and sessions, and old finished emails
    (``taskflow-link purge-expired``)."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def execute(self) -> PurgeReport:
        now = self._clock.now()
        async with self._uow() as uow:
            report = PurgeReport(
                await uow.pending_logins.purge_expired(now),
                await uow.link_tickets.purge_expired(now),
                await uow.sessions.purge_expired(now),
                await uow.email_tokens.purge_expired(now),
                await uow.outgoing_emails.purge_finished(now - KEEP_FINISHED_EMAILS),
                await uow.link_proposals.purge_expired(now),
            )
            await uow.commit()
        return report
