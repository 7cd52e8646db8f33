"""The purge in the background of a serving process (the web app, each of ``serve --workers``'
processes, the gateway bot): what ``taskflow-link purge-expired`` deletes, every
``purge_interval_seconds`` (``TASKFLOW_LINK_PURGE_INTERVAL_SECONDS``; 0: never), so that a
deployment nobody set a cron job up for does not grow its expired rows for good.

Several processes run one each, and take turns: each batch of the purge first takes the
purge's turn (on Postgres an advisory lock), and a purge that finds another one's batch under
way ends its run there, leaving the rest to it (see ``PurgeExpired``); ``purge-expired`` waits
for that batch instead, and the background purge then gives way to it.

The first run comes about a minute after the start (spread over 30 to 90 s, so that processes
started together do not all look at once), not an interval later: a process restarted more
often than the interval (deployments, a crash loop) would otherwise never purge.

Each run deletes only what every serving process announced lately would (see ``PurgeExpired``'s
``peers``): one whose TASKFLOW_LINK_AUDIT_RETENTION_DAYS is longer, or whose webhook URLs
differ, holds it back, which the worker says once (and once when it no longer does).

Stopping: a purge waiting for its next run stops at once; one under way ends after its batch
under way (each batch is one transaction, committed whole), or, when that batch has not ended
within ``stop_seconds``, is cut off and its transaction rolled back: nothing is half-written,
and what it did not delete goes at the next run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

from domain import errors
from domain.use_cases import PurgeEnd, PurgeReport, Stopping
from entrypoints.container import Container
from entrypoints.queue_worker import StorageTrouble

log = logging.getLogger("taskflow_link.purge")

FIRST_RUN_AFTER = 60.0  # seconds after the start, spread by half of it either way


class PurgeWorker:
    name = "purge"

    def __init__(
        self,
        container: Container,
        *,
        interval: float | None = None,
        first_run_after: float | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``interval``: seconds between the end of one run and the start of the next (the
        setting unless given; 0: the worker does nothing). ``first_run_after``: seconds
        before the first run (about a minute unless given, never more than ``interval``).
        ``sleep``: how the worker waits (tests drive the loop with their own)."""
        settings = container.settings()
        self._container = container
        self._interval = settings.purge_interval_seconds if interval is None else interval
        if first_run_after is None:
            spread = FIRST_RUN_AFTER * random.uniform(0.5, 1.5)  # noqa: S311 (not a secret)
            first_run_after = min(self._interval, spread)
        self._first_run_after = first_run_after
        self._stop_seconds = settings.shutdown_timeout_seconds
        self._sleep = sleep
        self._stopping = Stopping()
        self._purging = False
        self._task: asyncio.Task[None] | None = None
        self._storage = StorageTrouble(log, "purge")
        self._broken = False  # a failure other than the database's said, until a run works
        self._own_retention = settings.audit_retention_days
        self._held: tuple[int | None, bool] = (None, False)  # what the last run said held it

    @staticmethod
    def wanted(container: Container) -> bool:
        return container.settings().purge_interval_seconds > 0

    @property
    def stopping(self) -> Stopping:
        """Asked when the process stops (``stop``)."""
        return self._stopping

    def start(self) -> None:
        if self._task is None and self._interval > 0:
            self._stopping = Stopping()  # a worker stopped before may be started again
            self._task = asyncio.create_task(self._run(), name="taskflow-link purge")

    async def stop(self) -> None:
        """Stop (see the module's doc). Never raises; bounded by twice ``stop_seconds`` (the
        batch under way, then its rollback once cut off)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.ask()
        if not self._purging:
            task.cancel()  # waiting for the next run: it holds nothing
        _, late = await asyncio.wait({task}, timeout=self._stop_seconds)
        if late:
            log.warning(
                "purge: the batch under way did not end within %s s of the stop; cut off (its "
                "transaction is rolled back: those rows go at the next run)",
                self._stop_seconds,
            )
            task.cancel()
            _, late = await asyncio.wait({task}, timeout=self._stop_seconds)
            if late:
                log.warning("purge: could not roll back its batch in time; left behind")
                return
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        wait = self._first_run_after
        while True:
            await self._sleep(wait)
            self._purging = True
            try:
                await self.run_once()
            finally:
                self._purging = False
            if self._stopping.asked:
                return
            wait = self._interval

    async def run_once(self) -> PurgeReport | None:
        """One run; never raises (a failed run is said once per streak, the next retries)."""
        try:
            report: PurgeReport = await self._container.purge_expired().execute(
                wait=False, stopping=self._stopping
            )
        except errors.StorageError as exc:
            self._storage.failed(exc)
            return None
        except Exception:
            if not self._broken:
                log.exception(
                    "purge failed; tried again in %g s (said once until it works)", self._interval
                )
            self._broken = True
            return None
        self._storage.worked()
        if self._broken:
            self._broken = False
            log.warning("purge works again")
        self._say_held(report)
        _say(report)
        return report

    def _say_held(self, report: PurgeReport) -> None:
        """Says, once until it changes, what other processes' settings held this one's
        purge back from."""
        held = (report.audit_retention_held, report.webhooks_held)
        if held == self._held:
            return
        self._held = held
        days, webhooks = held
        if days is None and not webhooks:
            log.info("purge: no other process holds it back any more: its own settings apply")
            return
        what = []
        if days is not None:
            what.append(
                f"audit events kept {'forever' if days == 0 else f'{days} days'}, not the "
                f"{self._own_retention} days of this one's TASKFLOW_LINK_AUDIT_RETENTION_DAYS"
            )
        if webhooks:
            what.append(
                "every pending webhook delivery kept (their TASKFLOW_LINK_WEBHOOK_URLS differ "
                "from this one's)"
            )
        log.warning(
            "purge: another web instance or gateway bot on this database keeps more: %s. It "
            "deletes only what every process would; the processes that differ are named in "
            "this log (taskflow_link.instances). Give them all the same settings.",
            "; ".join(what),
        )


def _say(report: PurgeReport) -> None:
    if report.ended is PurgeEnd.ANOTHER and not report.deleted:
        log.debug("purge: another purge is under way; this run left it the work")
        return
    if report.deleted:
        log.info(
            "purge: deleted %d pending sign-in(s), %d /link ticket(s), %d session(s), "
            "%d emailed link(s), %d link proposal(s), %d old email(s), %d old webhook "
            "delivery(ies), %d old role change(s), %d audit event(s) (%d batch(es))",
            report.pending_logins,
            report.link_tickets,
            report.sessions,
            report.email_tokens,
            report.link_proposals,
            report.emails,
            report.webhook_deliveries,
            report.role_changes,
            report.audit_events,
            report.batches,
        )
    if report.ended is PurgeEnd.ANOTHER:
        log.info("purge: another purge took over; the rest is left to it")
    elif report.ended is PurgeEnd.STOPPING:
        log.info("purge: stopped between two batches; the rest goes at the next run")
