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
from datetime import datetime

from domain import errors
from domain.ports import QueueListener
from domain.use_cases import RoleSyncReport
from domain.use_cases.discord_pauses import OUTAGE_THRESHOLD
from entrypoints.container import Container, refresh_finish_seconds
from entrypoints.queue_worker import QueueWorker, StorageTrouble, idle_seconds

log = logging.getLogger("taskflow_link.role_connections")


def paused_reason(report: RoleSyncReport) -> str:
    """Why a pass stopped early (``report.paused``), and until when."""
    if report.paused_until is None:  # a retry_after that has passed already
        return "Discord rate limited the Linked Roles calls (for a moment)"
    until = report.paused_until.isoformat(timespec="seconds")
    if report.blocked:
        return (
            "Discord (or Cloudflare in front of it) blocks this address (an HTML 429 or 403, "
            "code 40333, or a 401 or 403 that is not Discord's JSON): no call to Discord before "
            f"{until} (1, 5, 15, then 60 minutes after each block in a row)"
        )
    if report.down:
        return (
            f"Discord is not answering (5xx or timeouts, {OUTAGE_THRESHOLD} or more calls in a "
            f"row): no call to Discord before {until} (30 s, then 2 and 5 minutes after each "
            "pass that fails alike)"
        )
    # retry_after: met by this process, or (through Redis) by another instance
    return f"Discord rate limited the Linked Roles calls until {until} (retry_after)"


def log_report(report: RoleSyncReport) -> None:
    """One line per pass that did something (counts only: never an id's token)."""
    if report.total == 0:
        return
    if report.paused:
        log.warning(
            "role connections: pass stopped, %d left due for the next one: %s",
            report.paused,
            paused_reason(report),
        )
        if report.total == report.paused:
            return
    trouble = report.failed or report.unreadable or report.key_missing
    log.log(
        logging.WARNING if trouble else logging.INFO,
        "role connections: %d pushed, %d cleared after an unlink, %d dropped (Discord access "
        "revoked), %d failed (retried later), %d unreadable with the configured keys, %d "
        "given up (unlinked, and Discord failed every push for about a week)%s%s",
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
        gone_note(report),
    )


def gone_note(report: RoleSyncReport) -> str:
    """The rows another pusher took over (this one's lease ran out on the way to them) or
    deleted meanwhile, and those left for their user's limit to reset: counted by the pass,
    so said with the other counts."""
    notes = f", {report.gone} {GONE}" if report.gone else ""
    if report.waiting:
        notes += f", {report.waiting} {WAITING}"
    return notes


GONE = "taken over or deleted by another instance meanwhile"
WAITING = (
    "left due until Discord's limit of their pushes (or of the token refreshes) resets "
    "(X-RateLimit-Remaining: 0 to the last one, or its 429)"
)


class RoleConnectionWorker(QueueWorker):
    name = "role connection"

    def __init__(self, container: Container, *, poll_seconds: float | None = None) -> None:
        super().__init__(
            poll_seconds=poll_seconds or container.settings().role_connections_poll_seconds,
            log=log,
            stop_seconds=container.settings().shutdown_timeout_seconds,
            # A refresh cut off by the stop ends first: its answer, stored (Discord spent
            # the refresh token it replaces).
            finish_seconds=refresh_finish_seconds(container.settings()),
        )
        self._storage = StorageTrouble(log, "role connections")
        self._container = container
        self._paused_until: datetime | None = None  # Discord's rate limit, at the last pass

    def listener(self) -> QueueListener:
        listener: QueueListener = self._container.role_connection_listener()
        return listener

    async def pass_once(self) -> bool:
        report = await self.run_once()
        self._paused_until = report.paused_until if report is not None else None
        return False  # a pass works through everything due, batch after batch

    def idle_seconds(self) -> float:
        """Until the next poll, or sooner when Discord's rate limit (or a block) ends before
        it: what it left due is pushed then (a wake-up meanwhile claims nothing)."""
        return idle_seconds(self._poll, self._paused_until, self._container.clock().now())

    async def run_once(self) -> RoleSyncReport | None:
        """One pass; never raises (a broken pass is logged, the next one tries again)."""
        try:
            report: RoleSyncReport = await self._container.refresh_role_connections().execute(
                stopping=self.stopping
            )
        except errors.StorageError as exc:
            self._storage.failed(exc)
            return None
        except Exception:
            log.exception("role connections: a pass failed; will retry")
            return None
        self._storage.worked()
        log_report(report)
        return report
