"""Sends the webhook outbox in the background of a serving process (the web app, the gateway
bot); see ``QueueWorker`` for how it is woken (``webhook_poll_seconds`` is its poll). Several
processes may run one each: each pass claims batches no other worker gets, and never an
endpoint another worker is sending to.

Without webhook URLs it does nothing at all (no pass, no listening connection)."""

from __future__ import annotations

import logging

from domain import errors
from domain.ports import QueueListener
from domain.use_cases import WebhookReport
from entrypoints.container import Container
from entrypoints.queue_worker import QueueWorker, StorageTrouble

log = logging.getLogger("taskflow_link.webhooks")


class WebhookWorker(QueueWorker):
    name = "webhook"

    def __init__(self, container: Container, *, poll_seconds: float | None = None) -> None:
        super().__init__(
            poll_seconds=poll_seconds or container.settings().webhook_poll_seconds,
            log=log,
            stop_seconds=container.settings().shutdown_timeout_seconds,
        )
        self._storage = StorageTrouble(log, "webhook queue")
        self._container = container
        self._enabled = bool(container.webhook_outbox().endpoints)

    def start(self) -> None:
        if self._enabled:
            super().start()

    def listener(self) -> QueueListener:
        listener: QueueListener = self._container.webhook_queue_listener()
        return listener

    async def pass_once(self) -> bool:
        report = await self.run_once()
        return report is not None and report.busy

    async def run_once(self) -> WebhookReport | None:
        """One pass over what is due; never raises (a broken pass is logged, the next retries).
        Lines name the delivery, the event (its ``webhook-id``) and the endpoint's host only."""
        try:
            report: WebhookReport = await self._container.deliver_webhooks().execute(
                stopping=self.stopping
            )
        except errors.StorageError as exc:
            self._storage.failed(exc)
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
                "`taskflow-link webhooks retry` (`--id %s`: this delivery first, then the rest)",
                d.host,
                d.event.message_id,
                d.id,
            )
        for broken in report.broken:  # after the outcomes the other endpoints had
            if isinstance(broken, errors.StorageError):
                self._storage.failed(broken)
            else:
                log.error("webhook delivery to an endpoint failed; will retry", exc_info=broken)
        if not any(isinstance(broken, errors.StorageError) for broken in report.broken):
            self._storage.worked()
        for d in report.taken_over:
            log.warning(
                "webhook %s (%s) to %s: its lease ran out while it was sent (a stalled worker, "
                "or clocks apart between instances), and another worker took it over; this "
                "attempt's outcome is dropped",
                d.event.message_id,
                d.event.type,
                d.host,
            )
        return report
