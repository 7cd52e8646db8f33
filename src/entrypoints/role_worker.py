"""Applies the queue of Discord role changes (the role for linked members) in the background of
a serving process (the web app, the gateway bot); see ``QueueWorker`` for how it is woken.
Runs only when ``TASKFLOW_LINK_DISCORD_LINKED_ROLES`` names a role."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable
from datetime import datetime

from domain import errors
from domain.model import DiscordId, RoleAction, RoleChange, RoleChangeCount, RoleChangeStatus
from domain.ports import QueueListener, RoleCallOutcome
from domain.use_cases import RoleChangeReport
from domain.use_cases.discord_pauses import OUTAGE_THRESHOLD
from entrypoints.container import Container
from entrypoints.queue_worker import QueueWorker, StorageTrouble, idle_seconds

# In apply_until_done's totals: refusals taken from a whole-role hold, without a call.
UNSENT = "refused_unsent"
# In apply_until_done's totals: changes of an action or a status a newer release wrote (a
# rolling upgrade, a rollback), that release's to apply; each under ``NEWER:<action>/<status>``
# too, in that release's words.
NEWER = "newer_release"
RATE_LIMITED = RoleCallOutcome.RATE_LIMITED.value
# What a refusal asks of the operator, in its log line.
_WHY = {
    RoleCallOutcome.MISSING_PERMISSIONS.value: "the bot's role needs Manage Roles and must sit "
    "above this role (Server Settings → Roles)",
    RoleCallOutcome.UNKNOWN_GUILD.value: "the bot is not in this server (removed from it?), or "
    "the server id in TASKFLOW_LINK_DISCORD_LINKED_ROLES is wrong",
    RoleCallOutcome.UNKNOWN_ROLE.value: "the server has no such role (deleted?): check "
    "TASKFLOW_LINK_DISCORD_LINKED_ROLES",
    RoleCallOutcome.NOT_A_MEMBER.value: "this Discord user is not in the server",
}

log = logging.getLogger("taskflow_link.roles")


def _change(change: RoleChange) -> str:
    """How a log line names a change: ids only (no token, no name, no account)."""
    return (
        f"{change.action.value} role {change.role.role_id} in server {change.role.guild_id} "
        f"for Discord user {change.discord_id}"
    )


def _by_server(changes: list[RoleChange]) -> dict[DiscordId, list[RoleChange]]:
    servers: dict[DiscordId, list[RoleChange]] = {}
    for change in changes:
        servers.setdefault(change.role.guild_id, []).append(change)
    return servers


class RoleWorker(QueueWorker):
    name = "role"

    def __init__(self, container: Container, *, poll_seconds: float | None = None) -> None:
        super().__init__(
            poll_seconds=poll_seconds or container.settings().discord_roles_poll_seconds,
            log=log,
            stop_seconds=container.settings().shutdown_timeout_seconds,
        )
        self._storage = StorageTrouble(log, "role queue")
        self._container = container
        self._paused_until: datetime | None = None  # Discord's rate limit, at the last pass

    @staticmethod
    def wanted(container: Container) -> bool:
        """Whether this process should run one: a role is configured."""
        return bool(container.settings().linked_roles)

    def listener(self) -> QueueListener:
        listener: QueueListener = self._container.role_queue_listener()
        return listener

    async def pass_once(self) -> bool:
        report = await self.run_once()
        self._paused_until = report.paused_until if report is not None else None
        return report is not None and report.busy

    def idle_seconds(self) -> float:
        """Until the next poll, or sooner when Discord's rate limit ends before it (the changes
        it held back are due then: a wake-up meanwhile sends nothing where it holds)."""
        return idle_seconds(self._poll, self._paused_until, self._container.clock().now())

    async def run_once(self) -> RoleChangeReport | None:
        """One pass over what is due; never raises (a broken pass is logged, the next retries)."""
        try:
            report: RoleChangeReport = await self._container.apply_role_changes().execute(
                stopping=self.stopping
            )
        except errors.StorageError as exc:
            self._storage.failed(exc)
            return None
        except Exception:
            log.exception("role change pass failed; will retry")
            return None
        self._storage.worked()
        for change in report.done:
            log.info("Discord role change done: %s", _change(change))
        for change in report.refused:
            log.warning(
                "Discord refused to %s (%s%s): not retried; `taskflow-link roles sync` asks "
                "again once this is fixed",
                _change(change),
                change.last_error,
                f": {_WHY[change.last_error]}" if change.last_error in _WHY else "",
            )
        limited = [c for c in report.retrying if c.last_error == RATE_LIMITED]
        for change in report.retrying:
            if change.last_error != RATE_LIMITED:
                log.warning(
                    "Discord role change not done (%s): %s; next try at %s",
                    change.last_error,
                    _change(change),
                    change.next_attempt_at.isoformat(timespec="seconds"),
                )
        # One line per server, not one per change: a sync of thousands of members waits for
        # Discord's limit once per window.
        for server, waiting in sorted(_by_server(limited).items()):
            log.warning(
                "%d Discord role change(s) in server %s wait for Discord's rate limit; "
                "next try from %s",
                len(waiting),
                server,
                min(c.next_attempt_at for c in waiting).isoformat(timespec="seconds"),
            )
        if report.held_back:
            # One line for the batch, not one per change: a backlog waits for Discord once.
            log.warning(
                "Discord is not answering role changes (5xx or timeouts, %d or more calls in "
                "a row): %d more change(s) held back untried; next try from %s",
                OUTAGE_THRESHOLD,
                len(report.held_back),
                min(c.next_attempt_at for c in report.held_back).isoformat(timespec="seconds"),
            )
        unsent = Counter((c.role, c.last_error) for c in report.refused_unsent)
        for (role, reason), count in sorted(unsent.items(), key=str):
            log.warning(
                "%d more change(s) of role %s in server %s taken as refused (%s) without "
                "asking Discord: Discord refused a call for the whole role (or the bot token) "
                "while they were queued; `taskflow-link roles sync` asks again once this is "
                "fixed",
                count,
                role.role_id,
                role.guild_id,
                reason,
            )
        left = Counter(change.role for change in report.unconfigured)
        for role, count in sorted(left.items()):
            log.warning(
                "%d change(s) of role %s in server %s finished without calling Discord: the "
                "role is no longer in TASKFLOW_LINK_DISCORD_LINKED_ROLES (not added to these "
                "linked members; `taskflow-link roles sync` asks again if it is configured "
                "again)",
                count,
                role.role_id,
                role.guild_id,
            )
        for change in report.failed:
            log.error(
                "Discord role change given up after %d attempts (%s): %s "
                "(`taskflow-link roles sync` asks again)",
                change.attempts,
                change.last_error,
                _change(change),
            )
        return report


async def apply_until_done(container: Container, *, since: datetime, wait: float) -> Counter[str]:
    """Apply the role queue until nothing is pending, waiting for changes Discord asked to
    retry later for up to ``wait`` seconds (``taskflow-link roles sync``). Then count the
    changes of the configured roles asked for at ``since`` or later, as they are now,
    whoever applied them (the service's role workers take their share of the queue): by
    outcome, ``add:done``, ``remove:done``, each refusal's reason (``not_configured``: an
    instance whose setting does not name the role finished it unsent), ``given_up``,
    ``still_queued``; ``UNSENT`` counts the refusals it took from a whole-role hold without
    asking Discord (among those by reason); ``NEWER`` those a newer release wrote, by their
    own text (``newer_release:resync/pending``), in none of the others. The changes of roles
    its setting does not name are left to the service's workers (the command may be run with
    fewer roles than the service has)."""
    totals: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    clock = container.clock()
    while True:
        apply = container.apply_role_changes(only_configured=True)
        report: RoleChangeReport = await apply.execute(limit=100)
        totals[UNSENT] += sum(1 for c in report.refused_unsent if c.requested_at >= since)
        if report.busy:
            continue
        queue = await container.show_role_queue().execute()
        if queue.pending == 0 or queue.next_attempt_at is None:
            break
        if not await _asked_and_pending(container, since):
            break  # what is left is not this run's (another change's back-off, say)
        due_at = queue.next_attempt_at
        if report.paused_until is not None and due_at <= clock.now():
            due_at = report.paused_until  # what is due waits for Discord's rate limit
        due_in = (due_at - clock.now()).total_seconds()
        if loop.time() + due_in > deadline:
            break
        await asyncio.sleep(max(due_in, 0.2))
    counts: list[RoleChangeCount] = await container.count_role_changes().execute(since)
    return tally(counts, totals)


def tally(counts: Iterable[RoleChangeCount], totals: Counter[str]) -> Counter[str]:
    """``counts`` added to ``totals`` by outcome (see ``apply_until_done``)."""
    for count in counts:
        if _of_a_newer_release(count):
            totals[NEWER] += count.count
            totals[f"{NEWER}:{count.action}/{count.status}"] += count.count
        elif count.status is RoleChangeStatus.PENDING:
            totals["still_queued"] += count.count
        elif count.status is RoleChangeStatus.DONE:
            totals[f"{count.action}:done"] += count.count
        elif count.status is RoleChangeStatus.FAILED:
            totals["given_up"] += count.count
        else:
            totals[count.last_error or "rejected"] += count.count
    return totals


async def _asked_and_pending(container: Container, since: datetime) -> bool:
    """Whether a change asked for at ``since`` or later is still pending."""
    counts: list[RoleChangeCount] = await container.count_role_changes().execute(since)
    return any(
        count.status is RoleChangeStatus.PENDING and not _of_a_newer_release(count)
        for count in counts
    )


def _of_a_newer_release(count: RoleChangeCount) -> bool:
    """Whether the changes ``count`` counts say an action or a status this version does not
    know: a newer release's, applied by its instances only (never waited for here)."""
    return not isinstance(count.action, RoleAction) or not isinstance(
        count.status, RoleChangeStatus
    )
