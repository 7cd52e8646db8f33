"""Sends the email queue in the background of a serving process (the web app, the gateway
bot). Several processes may run one each: each pass claims a batch no other worker gets.

A worker looks at the queue when it starts, whenever it is woken, and every
``email_poll_seconds``. It is woken by its own process (the web app, after a form), and, on
Postgres, by every instance through the container's ``QueueListener`` (LISTEN/NOTIFY): an
email queued anywhere goes out at once, and the poll is only the safety net."""

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
        self._waiting = False
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run(), name="taskflow-link email worker"),
                asyncio.create_task(self._listen(), name="taskflow-link email listener"),
            ]

    def wake(self) -> None:
        """Look at the queue now (something was probably just queued)."""
        self._wake.set()

    @property
    def idle(self) -> bool:
        """Waiting for a wake-up or the next poll, with none pending."""
        return self._waiting and not self._wake.is_set()

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

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
                "email %s (%s) not sent after %d attempts; giving up "
                "(`taskflow-link email retry` sends it again)",
                email.id,
                email.kind.value,
                email.attempts,
            )
        return report

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            report = await self.run_once()
            busy = report is not None and any(
                (report.sent, report.retrying, report.failed, report.cancelled)
            )
            if busy:
                continue  # there may be more than one batch
            self._waiting = True
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll)
            finally:
                self._waiting = False

    async def _listen(self) -> None:
        """Wake-ups from other instances. The listener survives outages itself; should it
        stop all the same, the worker goes on polling."""
        try:
            await self._container.email_queue_listener().listen(self.wake)
        except Exception:
            log.exception("email queue listener stopped; polling every %s s", self._poll)
