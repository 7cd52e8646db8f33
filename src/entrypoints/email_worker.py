"""Sends the email queue in the background of a serving process (the web app, the gateway
bot); see ``QueueWorker`` for how it is woken."""

from __future__ import annotations

import logging

from adapters import tracebacks
from domain import errors
from domain.ports import QueueListener
from domain.use_cases import DeliveryReport
from entrypoints.container import Container
from entrypoints.queue_worker import QueueWorker, StorageTrouble

log = logging.getLogger("taskflow_link.email")


class EmailWorker(QueueWorker):
    name = "email"

    def __init__(self, container: Container, *, poll_seconds: float | None = None) -> None:
        super().__init__(
            poll_seconds=poll_seconds or container.settings().email_poll_seconds,
            log=log,
            stop_seconds=container.settings().shutdown_timeout_seconds,
        )
        self._storage = StorageTrouble(log, "email queue")
        self._container = container

    def listener(self) -> QueueListener:
        listener: QueueListener = self._container.email_queue_listener()
        return listener

    async def pass_once(self) -> bool:
        report = await self.run_once()
        return report is not None and report.busy

    async def run_once(self) -> DeliveryReport | None:
        """One pass over what is due; never raises (a broken pass is logged, the next retries)."""
        try:
            report: DeliveryReport = await self._container.deliver_emails().execute(
                stopping=self.stopping
            )
        except errors.StorageError as exc:
            self._storage.failed(exc)
            return None
        except Exception:
            log.exception("email delivery pass failed; will retry")
            return None
        self._storage.worked()
        for email, failure in report.unexpected:
            log.error(  # without its message, which may quote the address, the body, a link
                "email %s (%s) failed unexpectedly (%s)\n%s",
                email.id,
                email.kind.value,
                tracebacks.types(failure),
                tracebacks.frames(failure),
            )
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
        for email in report.taken_over:
            log.warning(
                "email %s (%s): its lease ran out while it was sent (a stalled worker, or "
                "clocks apart between instances), and another sender took it over; this "
                "attempt's outcome is dropped",
                email.id,
                email.kind.value,
            )
        return report
