from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

from domain.ports import Clock, UnitOfWorkFactory
from domain.use_cases._webhooks import WebhookOutbox
from domain.use_cases.webhooks import KEEP_FINISHED_WEBHOOKS
from domain.webhooks import WebhookState

# Sent, failed and cancelled emails stay this long: the account page and support can see them.
KEEP_FINISHED_EMAILS = timedelta(days=30)
# A member's role changes once they are unlinked and nothing is left to do (the removal done,
# or they were not in the server), as long as the finished emails: `roles sync` counts them.
KEEP_FINISHED_ROLE_CHANGES = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class PurgeReport:
    pending_logins: int
    link_tickets: int
    sessions: int
    email_tokens: int = 0
    emails: int = 0
    link_proposals: int = 0
    webhook_deliveries: int = 0
    audit_events: int = 0
    role_changes: int = 0
    # Pending webhook deliveries kept because this process names no webhook URLs, so it
    # cannot tell a removed endpoint from a live one (a cron job without the settings).
    webhook_pending_kept: int = 0


class PurgeExpired:
    """Delete expired one-time secrets and sessions, old finished emails and webhook
    deliveries, the role changes of members unlinked more than 30 days ago with nothing left
    to do, and audit events older than the retention (``taskflow-link purge-expired``).
    ``audit_retention``: ``None`` keeps the audit trail forever.

    Pending webhook deliveries of the endpoints in ``outbox`` (this process's settings) are
    kept however old: only one endpoint's first delivery is ever attempted, so the ones
    behind a head that keeps failing wait, and deleting them would leave the receiver
    without them (and perhaps a stale state: ``link.created`` as the last word on a member
    who unlinked) with nothing failed to retry. Those of an endpoint no longer configured
    go after ``KEEP_FINISHED_WEBHOOKS`` from when they were queued, oldest first. A process
    whose settings name no webhook URL (a cron job given only the database) cannot tell a
    removed endpoint from a live one: it keeps every pending delivery, and says how many."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        outbox: WebhookOutbox,
        audit_retention: timedelta | None = None,
    ) -> None:
        self._uow, self._clock, self._audit_retention = uow, clock, audit_retention
        self._configured = [e.key for e in outbox.endpoints] or None

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
                await uow.webhooks.purge_finished(now - KEEP_FINISHED_WEBHOOKS, self._configured),
                (
                    await uow.audit.purge_before(now - self._audit_retention)
                    if self._audit_retention is not None
                    else 0
                ),
                await uow.role_changes.purge_finished(now - KEEP_FINISHED_ROLE_CHANGES),
            )
            if self._configured is None:
                pending = sum(
                    s.counts.get(WebhookState.PENDING, 0) for s in await uow.webhooks.summary()
                )
                report = replace(report, webhook_pending_kept=pending)
            await uow.commit()
        return report
