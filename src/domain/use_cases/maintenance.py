from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from domain.ports import Clock, UnitOfWork, UnitOfWorkFactory
from domain.use_cases._claims import Stopping
from domain.use_cases._shared import SENT_TWICE_WITHIN
from domain.use_cases._webhooks import WebhookOutbox
from domain.use_cases.discord_auth import KEPT_PAST_EXPIRY
from domain.use_cases.webhooks import KEEP_FINISHED_WEBHOOKS
from domain.webhooks import WebhookState

# Sent, failed and cancelled emails stay this long: the account page and support can see them.
KEEP_FINISHED_EMAILS = timedelta(days=30)
# A member's role changes once they are unlinked and nothing is left to do (the removal done,
# or they were not in the server), as long as the finished emails: `roles sync` counts them.
KEEP_FINISHED_ROLE_CHANGES = timedelta(days=30)


# Rows deleted per transaction: a first run after months (or a table that grew under a
# cron job nobody scheduled) deletes in short transactions that let the other writers in
# between (on SQLite, the one writer at a time), not in one that holds them all.
PURGE_BATCH = 2000


class PurgeEnd(enum.Enum):
    DONE = "done"  # nothing left to delete
    STOPPING = "stopping"  # the process stops: cut between two batches
    ANOTHER = "another"  # another purge's batch was under way: the rest is left to it


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
    batches: int = 0  # transactions that deleted (or looked for) rows
    ended: PurgeEnd = PurgeEnd.DONE

    @property
    def deleted(self) -> int:
        return (
            self.pending_logins
            + self.link_tickets
            + self.sessions
            + self.email_tokens
            + self.emails
            + self.link_proposals
            + self.webhook_deliveries
            + self.audit_events
            + self.role_changes
        )


_Step = Callable[[UnitOfWork, datetime, int], Awaitable[int]]


class PurgeExpired:
    """Delete expired one-time secrets (Discord round trips ``KEPT_PAST_EXPIRY`` later) and
    sessions, old finished emails and webhook
    deliveries, the role changes of members unlinked more than 30 days ago with nothing left
    to do, and audit events older than the retention (``taskflow-link purge-expired``, and
    the serving processes' purge every ``TASKFLOW_LINK_PURGE_INTERVAL_SECONDS``).
    ``audit_retention``: ``None`` keeps the audit trail forever.

    In batches of ``batch`` rows, one transaction each, table after table: a batch that
    deletes fewer than ``batch`` rows ends its table. Each batch first takes the purge's turn
    (``Maintenance``): one batch at a time across every process, and ``wait=False`` (the
    serving processes' purge) ends the run as soon as another purge's batch is under way,
    leaving the rest to it (``PurgeEnd.ANOTHER``), while ``wait=True`` (the command) waits
    for that batch, and the other purge then gives way at its next one. ``stopping``: asked
    when the process stops, the run ends between two batches (``PurgeEnd.STOPPING``): each
    batch is committed whole or not at all, and what is left goes at the next run. Every
    cut-off is computed once, at the start of the run.

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
        *,
        batch: int = PURGE_BATCH,
    ) -> None:
        """One-time secrets are kept a while past their expiry: a form sent twice (a double
        click) whose first request spent one just before it expired reads it again to be
        answered the first one's session (an emailed link, a link proposal:
        ``SENT_TWICE_WITHIN``), and without it is refused, its person signed out or left
        with an ended cookie; a pending sign-in ``KEPT_PAST_EXPIRY`` (a "Confirm with
        Discord" load that spent it may still be under way, which its callback loaded twice
        waits for: ``FinishDiscordConfirmation``)."""
        self._uow, self._clock, self._audit_retention = uow, clock, audit_retention
        self._configured = [e.key for e in outbox.endpoints] or None
        self._batch = batch

    def _steps(self) -> list[tuple[str, _Step]]:
        configured, retention = self._configured, self._audit_retention
        steps: list[tuple[str, _Step]] = [
            (
                "pending_logins",
                lambda u, now, n: u.pending_logins.purge_expired(now - KEPT_PAST_EXPIRY, n),
            ),
            ("link_tickets", lambda u, now, n: u.link_tickets.purge_expired(now, n)),
            ("sessions", lambda u, now, n: u.sessions.purge_expired(now, n)),
            (
                "email_tokens",
                lambda u, now, n: u.email_tokens.purge_expired(now - SENT_TWICE_WITHIN, n),
            ),
            (
                "emails",
                lambda u, now, n: u.outgoing_emails.purge_finished(now - KEEP_FINISHED_EMAILS, n),
            ),
            (
                "link_proposals",
                lambda u, now, n: u.link_proposals.purge_expired(now - SENT_TWICE_WITHIN, n),
            ),
            (
                "webhook_deliveries",
                lambda u, now, n: u.webhooks.purge_finished(
                    now - KEEP_FINISHED_WEBHOOKS, configured, n
                ),
            ),
        ]
        if retention is not None:
            steps.append(
                ("audit_events", lambda u, now, n: u.audit.purge_before(now - retention, n))
            )
        steps.append(
            (
                "role_changes",
                lambda u, now, n: u.role_changes.purge_finished(
                    now - KEEP_FINISHED_ROLE_CHANGES, n
                ),
            )
        )
        return steps

    async def execute(
        self,
        *,
        wait: bool = True,
        stopping: Stopping | None = None,
        waiting: Callable[[], None] | None = None,
    ) -> PurgeReport:
        """``waiting``: called once, the first time a batch has to wait for another purge's
        (``wait=True``): the command says so, rather than look stuck."""
        now = self._clock.now()
        report = PurgeReport(0, 0, 0)
        for field, step in self._steps():
            while True:
                if stopping is not None and stopping.asked:
                    return replace(report, ended=PurgeEnd.STOPPING)
                async with self._uow() as uow:
                    if not await uow.maintenance.take_purge_turn(wait=False):
                        if not wait:
                            return replace(report, ended=PurgeEnd.ANOTHER)
                        if waiting is not None:
                            waiting()
                            waiting = None
                        await uow.maintenance.take_purge_turn(wait=True)
                    deleted = await step(uow, now, self._batch)
                    await uow.commit()
                report = replace(
                    report, batches=report.batches + 1, **{field: getattr(report, field) + deleted}
                )
                if deleted < self._batch:
                    break
        if self._configured is None:
            async with self._uow(read_only=True) as uow:
                pending = sum(
                    s.counts.get(WebhookState.PENDING, 0) for s in await uow.webhooks.summary()
                )
            report = replace(report, webhook_pending_kept=pending)
        return report
