from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from domain.ports import Clock, PurgePeers, UnitOfWork, UnitOfWorkFactory
from domain.use_cases._claims import Stopping
from domain.use_cases._shared import SENT_TWICE_WITHIN
from domain.use_cases._webhooks import WebhookOutbox
from domain.use_cases.discord_auth import KEPT_PAST_EXPIRY
from domain.use_cases.webhooks import KEEP_FINISHED_WEBHOOKS
from domain.webhooks import WebhookState, endpoints_digest

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
    # Held back by a serving process whose settings keep more (``PurgeExpired``'s ``peers``):
    # the audit retention in days applied instead of this process's own (0: every event
    # kept), None when it was its own; and every pending webhook delivery kept (then counted
    # in ``webhook_pending_kept``) because a live process names other webhook URLs.
    audit_retention_held: int | None = None
    webhooks_held: bool = False
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
    removed endpoint from a live one: it keeps every pending delivery, and says how many.

    Every serving process purges, each by its own settings, so without ``peers`` the
    shortest retention would win, silently (a gateway bot without
    TASKFLOW_LINK_AUDIT_RETENTION_DAYS deletes at 365 days the audit events a web instance
    keeps forever; one without a webhook URL the others name deletes that endpoint's
    abandoned deliveries). With them (the processes announced lately, ``PurgePeers``), a
    run deletes only what every one of them would: audit events older than the longest
    retention of them all (none when one keeps them forever), and no pending webhook
    delivery at all while one names other webhook URLs than this process (it cannot tell
    which endpoints the others name). The report says what was held back."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        outbox: WebhookOutbox,
        audit_retention: timedelta | None = None,
        *,
        batch: int = PURGE_BATCH,
        peers: PurgePeers | None = None,
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
        self._webhooks = endpoints_digest(outbox.endpoints)
        self._batch = batch
        self._peers = peers

    async def _terms(self) -> tuple[timedelta | None, list[str] | None, PurgeReport]:
        """The audit retention and configured endpoints this run applies, the longest and
        the fewest of this process's and the live ones' (``peers``), and a report that says
        which were held back."""
        retention, configured = self._audit_retention, self._configured
        report = PurgeReport(0, 0, 0)
        if self._peers is None:
            return retention, configured, report
        for terms in await self._peers.live():
            days = terms.audit_retention_days
            if retention is not None and days is not None:
                retention = max(retention, timedelta(days=days)) if days else None
            if configured is not None and terms.webhooks not in (None, self._webhooks):
                configured = None
                report = replace(report, webhooks_held=True)
        if retention != self._audit_retention:
            days = 0 if retention is None else retention.days
            report = replace(report, audit_retention_held=days)
        return retention, configured, report

    def _steps(
        self, retention: timedelta | None, configured: list[str] | None
    ) -> list[tuple[str, _Step]]:
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
        retention, configured, report = await self._terms()
        for field, step in self._steps(retention, configured):
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
        if configured is None:
            async with self._uow(read_only=True) as uow:
                pending = sum(
                    s.counts.get(WebhookState.PENDING, 0) for s in await uow.webhooks.summary()
                )
            report = replace(report, webhook_pending_kept=pending)
        return report
