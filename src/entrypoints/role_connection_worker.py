"""Keeps Discord role connections current in the background of a serving process (the web app,
the gateway bot), with Linked Roles turned on. Several processes may each run one: every
pass claims the rows it pushes, so no row is pushed by two at once.

A pass pushes what is due: a user whose ``linked_days`` just changed, one just unlinked
(Discord hears "not linked", then the tokens are deleted), one whose last push failed (after
its back-off). The worker passes when it starts, every ``role_connections_poll_seconds``, and
at once when a row is made due (an unlink, a password reset): by this process, or on Postgres by
any instance (LISTEN/NOTIFY, as the other queues)."""

from __future__ import annotations

import logging

from domain import errors
from domain.ports import QueueListener
from domain.use_cases import RoleSyncReport
from entrypoints.container import Container
from entrypoints.queue_worker import QueueWorker, log_storage_error

log = logging.getLogger("taskflow_link.role_connections")


def log_report(report: RoleSyncReport) -> None:
    """One line per pass that did something (counts only: never an id's token)."""
    if report.total == 0:
        return
    trouble = report.failed or report.unreadable or report.key_missing
    log.log(
        logging.WARNING if trouble else logging.INFO,
        "role connections: %d pushed, %d cleared after an unlink, %d dropped (Discord access "
        "revoked), %d failed (retried later), %d unreadable with the configured keys, %d "
        "given up (unlinked, and Discord failed every push for about a week)%s",
        report.pushed,
        report.cleared,
        report.revoked,
        report.failed,
        report.unreadable,
        report.given_up,
        f", {report.key_missing} sealed with a key not configured here (left to an instance "
        "that has it, tried again from 1 min on: expected while a new key is rolled out, "
        "otherwise give this instance the keys the others have)"
        if report.key_missing
        else "",
    )


class RoleConnectionWorker(QueueWorker):
    name = "role connection"

    def __init__(self, container: Container, *, poll_seconds: float | None = None) -> None:
        super().__init__(
            poll_seconds=poll_seconds or container.settings().role_connections_poll_seconds,
            log=log,
        )
        self._container = container

    def listener(self) -> QueueListener:
        listener: QueueListener = self._container.role_connection_listener()
        return listener

    async def pass_once(self) -> bool:
        await self.run_once()
        return False  # a pass works through everything due, batch after batch

    async def run_once(self) -> RoleSyncReport | None:
        """One pass; never raises (a broken pass is logged, the next one tries again)."""
        try:
            report: RoleSyncReport = await self._container.refresh_role_connections().execute()
        except errors.StorageError as exc:
            log_storage_error(log, "role connections", exc)
            return None
        except Exception:
            log.exception("role connections: a pass failed; will retry")
            return None
        log_report(report)
        return report
