"""Sends the webhook outbox in the background of a serving process (the web app, the gateway
bot), as ``EmailWorker`` sends the email queue: at start, when woken (by its own process, or on
Postgres by any instance through LISTEN/NOTIFY), and every ``webhook_poll_seconds``. Several
processes may run one each: each pass claims a batch no other worker gets.

Without webhook URLs it does nothing at all (no pass, no listening connection)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from domain import errors
from domain.use_cases import WebhookReport
from entrypoints.container import Container

log = logging.getLogger("taskflow_link.webhooks")


class WebhookWorker:
    def __init__(self, container: Container, *, poll_seconds: float | None = None) -> None:
        self._container = container
        self._poll = poll_seconds or container.settings().webhook_poll_seconds
        self._enabled = bool(container.webhook_outbox().endpoints)
        self._wake = asyncio.Event()
        self._waiting = False
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if self._enabled and not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run(), name="taskflow-link webhook worker"),
                asyncio.create_task(self._listen(), name="taskflow-link webhook listener"),
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

    async def run_once(self) -> WebhookReport | None:
        """One pass over what is due; never raises (a broken pass is logged, the next retries).
        Lines name the delivery, the event (its ``webhook-id``) and the endpoint's host only."""
        try:
            report: WebhookReport = await self._container.deliver_webhooks().execute()
        except errors.StorageError:
            log.warning("webhook queue unreachable (database); will retry")
            return None
        except Exception:
            log.exception("webhook delivery pass failed; will retry")
            return None
        for d in report.delivered:
            log.info("webhook %s (%s) delivered to %s", d.event.message_id, d.event.type, d.host)
        for d in report.retrying:
            log.warning(
                "webhook %s (%s) to %s failed (%s), attempt %d; next try at %s",
                d.event.message_id,
                d.event.type,
                d.host,
                d.last_error,
                d.attempts,
                d.next_attempt_at.isoformat(timespec="seconds"),
            )
        for d in report.failed:
            log.error(
                "webhook %s (%s) to %s failed %d times (last: %s); giving up "
                "(`taskflow-link webhooks retry --id %s` sends it again)",
                d.event.message_id,
                d.event.type,
                d.host,
                d.attempts,
                d.last_error,
                d.id,
            )
        for d in report.gone:
            log.warning(
                "webhook endpoint %s answered 410 Gone to %s: nothing more is sent to it until "
                "`taskflow-link webhooks retry`",
                d.host,
                d.event.message_id,
            )
        return report

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            report = await self.run_once()
            if report is not None and report.busy:
                continue  # there may be more than one batch
            self._waiting = True
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll)
            finally:
                self._waiting = False

    async def _listen(self) -> None:
        try:
            await self._container.webhook_queue_listener().listen(self.wake)
        except Exception:
            log.exception("webhook queue listener stopped; polling every %s s", self._poll)
