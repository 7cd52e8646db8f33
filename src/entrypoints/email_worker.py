"""Sends the email queue in the background of a serving process (the web app, the gateway
bot). Several processes may run one each: claiming an email has a single winner."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from domain import errors
from domain.use_cases import DeliveryReport
from entrypoints.container import Container

log = logging.getLogger("taskflow_link.email")


class EmailWorker:
    def __init__(self, container: Container, *, poll_seconds: float | None = None) -> None:
        self._container = container
        self._poll = poll_seconds or container.settings().email_poll_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="taskflow-link email worker")

    def wake(self) -> None:
        """Look at the queue now (something was probably just queued)."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run_once(self) -> DeliveryReport | None:
        """One pass over what is due; never raises (a broken pass is logged, the next retries)."""
        try:
            report: DeliveryReport = await self._container.deliver_emails().execute()
        except errors.StorageError:
            log.warning("email queue unreachable (database); will retry")
            return None
        except Exception:
            log.exception("email delivery pass failed; will retry")
            return None
        for email in report.sent:
            log.info("email %s (%s) sent", email.id, email.kind.value)
        for email in report.retrying:
            log.warning(
                "email %s (%s) not sent (%s), attempt %d; next try at %s",
                email.id,
                email.kind.value,
                email.last_error,
                email.attempts,
                email.next_attempt_at.isoformat(timespec="seconds"),
            )
        for email in report.failed:
            log.error(
                "email %s (%s) not sent after %d attempts; giving up",
                email.id,
                email.kind.value,
                email.attempts,
            )
        return report

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            report = await self.run_once()
            busy = report is not None and (report.sent or report.retrying or report.failed)
            if busy:
                continue  # there may be more than one batch
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)
