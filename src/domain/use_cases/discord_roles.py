"""The role for linked members (``TASKFLOW_LINK_DISCORD_LINKED_ROLES``).

Linking and unlinking never call Discord: they queue the member's roles in their own
transaction (``_shared.queue_role_changes``), and ``ApplyRoleChanges`` brings Discord in line
after the commit, retrying while Discord is unavailable. So Discord being down never blocks or
undoes a link, and a role change exists exactly when its link or unlink committed.

What a delivery sends is decided when it is sent, from the link as it is then: a member who is
linked gets the role, anyone else loses it. Whatever order requests, retries and concurrent
workers come in, the last delivery after the last link or unlink leaves the role right.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from domain.model import (
    ADD_MAY_HAVE_GIVEN,
    AuditEvent,
    AuditKind,
    DiscordId,
    LinkedRole,
    RoleAction,
    RoleChange,
    RoleChangeCount,
    RoleChangeStatus,
)
from domain.ports import (
    Clock,
    DiscordGuildRoles,
    RoleCallOutcome,
    RoleCallResult,
    UnitOfWork,
    UnitOfWorkFactory,
)
from domain.use_cases._claims import Claims, Stopping
from domain.use_cases.discord_pauses import (
    DiscordOutage,
    DiscordPauses,
    FailuresInARow,
)

# After Discord failed (5xx, a timeout, no connection), wait this long before each next try;
# then give up (about 8 hours in all: an outage of Discord, or of the network, passes).
RETRY_DELAYS = (
    timedelta(seconds=5),
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=2),
    timedelta(hours=4),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
# A worker that claimed a change and died lets it go after this long. The claim is renewed
# just before each call, so it need only outlast one call (its timeout is at most a minute).
CLAIM_LEASE = timedelta(minutes=2)
# What Discord's audit log says about the change (X-Audit-Log-Reason).
REASONS = {
    RoleAction.ADD: "TaskFlow Link: this Discord account was linked to a TaskFlow account",
    RoleAction.REMOVE: "TaskFlow Link: this Discord account is no longer linked to TaskFlow",
}
# Answers that another try would not change: not retried, audited.
REFUSALS = frozenset(
    {
        RoleCallOutcome.NOT_A_MEMBER,
        RoleCallOutcome.UNKNOWN_ROLE,
        RoleCallOutcome.MISSING_PERMISSIONS,
        RoleCallOutcome.UNKNOWN_GUILD,
        RoleCallOutcome.REJECTED,
    }
)
# The changes a rate limit held back come due spread over this share of the wait (at least
# JITTER_MIN, at most JITTER_MAX after its end), not all at one instant.
JITTER_SHARE = 0.25
JITTER_MIN = timedelta(seconds=1)
JITTER_MAX = timedelta(minutes=1)
_RANDOM = random.SystemRandom()
# Why a change was finished without calling Discord: its role is no longer in the setting.
NOT_CONFIGURED = "not_configured"
# Refusals that hold for every member of the role, not only the one asked for (the bot lacks
# Manage Roles or sits below the role, left the server, the role was deleted): the changes of
# that role in the queue then are taken as refused too, without asking Discord (each 401 and
# 403 counts towards Discord's limit of invalid requests per address, which bans it for an
# hour; a 404 is a call that can only fail). A bad bot token (401) holds for every role of
# the process that has it, for REFUSAL_HOLD, for the changes asked for before it.
WHOLE_ROLE_REFUSALS = frozenset(
    {
        RoleCallOutcome.MISSING_PERMISSIONS,
        RoleCallOutcome.UNKNOWN_GUILD,
        RoleCallOutcome.UNKNOWN_ROLE,
    }
)
REFUSAL_HOLD = timedelta(minutes=5)
_DONE = {
    RoleAction.ADD: AuditKind.DISCORD_ROLE_ADDED,
    RoleAction.REMOVE: AuditKind.DISCORD_ROLE_REMOVED,
}


def _whole_role(result: RoleCallResult) -> bool:
    """Whether Discord's refusal holds for every member of the role: one of
    ``WHOLE_ROLE_REFUSALS``, or any other 403 in Discord's JSON (a 403 is about the bot's
    access to the server or the role, never about one member; a code this service does not
    name, Discord's since, is no reason to ask again for each member)."""
    return result.outcome in WHOLE_ROLE_REFUSALS or (
        result.outcome is RoleCallOutcome.REJECTED and result.status == 403
    )


@dataclass(frozen=True, slots=True)
class RoleChangeReport:
    """One pass over the queue; each change as written back (``action``: what was sent,
    ``last_error``: why it is not done)."""

    done: list[RoleChange] = field(default_factory=list)
    refused: list[RoleChange] = field(default_factory=list)  # not retried
    retrying: list[RoleChange] = field(default_factory=list)
    failed: list[RoleChange] = field(default_factory=list)  # given up
    # Applied (or tried) while a newer request came: that one goes out next.
    superseded: list[RoleChange] = field(default_factory=list)
    # For a role no longer configured (an add, or anything for a linked member): finished
    # without calling Discord (``NOT_CONFIGURED``).
    unconfigured: list[RoleChange] = field(default_factory=list)
    # Refused without calling Discord: they were queued when a call got a refusal that holds
    # for the whole role (``_whole_role``), or asked for before a call made within
    # ``REFUSAL_HOLD`` got one for every role (a bad token).
    refused_unsent: list[RoleChange] = field(default_factory=list)
    # Held back untried: Discord failed ``OUTAGE_THRESHOLD`` calls in a row (5xx, timeouts),
    # due a little after the pause that followed (``last_error``: unavailable).
    held_back: list[RoleChange] = field(default_factory=list)
    # Discord rate limited the calls (for a server, or all of them), or is down: the earliest
    # moment one may be made again. Nothing is sent where the pause holds; run again then.
    paused_until: datetime | None = None

    @property
    def busy(self) -> bool:
        return any(
            (
                self.done,
                self.refused,
                self.retrying,
                self.failed,
                self.superseded,
                self.unconfigured,
                self.refused_unsent,
                self.held_back,
            )
        )


@dataclass(frozen=True, slots=True)
class _Refusal:
    result: RoleCallResult
    at: datetime  # when Discord answered
    until: datetime


# What a rate limit of the bot's role calls holds (``DiscordPauses`` scopes): one server's
# member roles (Discord limits that route per server), or every server (the bot's global
# limit). Cloudflare's block holds for every call of the process, these and Linked Roles'.
_BOT = "bot"
_SERVER = "server"


def _server(server: DiscordId) -> tuple[str, DiscordId]:
    return (_SERVER, server)


class RolePauses:
    """Until when Discord asked for no more role changes: per server (the member roles route
    is limited per server), or everywhere (Discord's global limit for the bot, or Cloudflare's
    answer to an address that made too many requests), kept in the process's
    ``DiscordPauses`` (with Redis, Discord's 429s are every instance's). One per process,
    kept across passes: every pass of its workers (and of ``roles sync``) sends nothing
    where a pause holds, instead of asking again for each batch (one refusal per batch,
    within the same ``retry_after``).

    Also a refusal of this process's bot token (401, for every role), for ``REFUSAL_HOLD``:
    the changes asked for before it are refused without asking Discord again (once per
    batch, otherwise: the worker goes on at once after a busy pass). A change asked for
    after it is sent, and its answer tells. ``roles sync`` runs in a process of its own, so
    it starts with none. (A refusal for a whole role, which every process would meet, is
    not kept here: ``ApplyRoleChanges`` refuses that role's changes in the queue.)"""

    def __init__(self, calls: DiscordPauses | None = None) -> None:
        """``calls``: the process's pauses of calls to Discord (a fresh one: these only)."""
        self._calls = calls if calls is not None else DiscordPauses()
        self._token_refused: _Refusal | None = None
        # Discord down (``OUTAGE_THRESHOLD`` failures in a row): the process's own, not shared.
        self.down = DiscordOutage()

    def token_refused(self, result: RoleCallResult, now: datetime) -> None:
        """Discord refused the bot token (a 401), whatever the role."""
        self._token_refused = _Refusal(result, now, now + REFUSAL_HOLD)

    def refusal(self, requested_at: datetime, now: datetime) -> RoleCallResult | None:
        """The refusal of the token holding at ``now`` for a change asked for at
        ``requested_at`` (``None``: send it)."""
        held = self._token_refused
        if held is None or held.until <= now:
            self._token_refused = None
            return None
        return held.result if requested_at <= held.at else None

    def rate_limited(self, server: DiscordId, result: RoleCallResult, now: datetime) -> datetime:
        """Pause after Discord's 429 (``result``) to a call for ``server``: until its
        ``retry_after``, for that server or, when the limit is global, for all; without one
        (Cloudflare's answer to an address), every call for the next step of
        ``CLOUDFLARE_PAUSES``. When calls for ``server`` may be made again."""
        scope = _BOT if result.global_limit else _server(server)
        self._calls.limited(scope, result.retry_after, now)
        return self.until(server, now) or now

    def used_up(self, server: DiscordId, reset_after: float, now: datetime) -> None:
        """Discord's answer to a call for ``server`` said its limit has no call left until
        ``reset_after`` seconds from now: none is made for that server before (it would be
        answered 429, and each 429 counts towards Discord's limit of invalid requests)."""
        self._calls.limited(_server(server), reset_after, now)

    async def catch_up(self, servers: Iterable[DiscordId], now: datetime) -> None:
        """Take the rate limits other instances met for ``servers``, or for every server
        (the bot's global limit), and tell them of this process's."""
        await self._calls.catch_up((_BOT, *(_server(server) for server in servers)), now)

    async def share(self, now: datetime) -> None:
        """Tell the other instances of the rate limits this process met."""
        await self._calls.share(now)

    def outage(self, now: datetime) -> datetime | None:
        """When the pause after Discord failed ``OUTAGE_THRESHOLD`` calls of a pass in a row
        (5xx, timeouts, no connection) ends (``None``: no such pause holds at ``now``): every
        role change of the process waits for it (``OUTAGE_PAUSES``, one step longer after
        each further pass that fails alike)."""
        return self.down.until(now)

    def went_through(self) -> None:
        """A call succeeded: the next Cloudflare 429 pauses for the first step again, and
        the token's refusal holds no more."""
        self._calls.went_through()
        self._token_refused = None
        self.down.answered()

    def everywhere(self, now: datetime) -> datetime | None:
        """When calls for any server may be made again (``None``: some may now)."""
        ends = [self._calls.until((_BOT,), now), self.outage(now)]
        return max((end for end in ends if end is not None), default=None)

    def paused_servers(self, now: datetime) -> frozenset[DiscordId]:
        """The servers paused at ``now`` (those whose pause ended are forgotten)."""
        return frozenset(
            scope[1]
            for scope in self._calls.paused(now)
            if isinstance(scope, tuple) and scope[0] == _SERVER
        )

    def until(self, server: DiscordId, now: datetime) -> datetime | None:
        """When calls for ``server`` may be made again; ``None``: now."""
        return self._calls.until((_BOT, _server(server)), now)

    def next_end(self, now: datetime) -> datetime | None:
        """The earliest end of a pause of role changes holding at ``now``."""
        ends = [
            until
            for scope, until in self._calls.paused(now).items()
            if scope == _BOT or (isinstance(scope, tuple) and scope[0] == _SERVER)
        ]
        if (block := self._calls.block_ends(now)) is not None:
            ends.append(block)
        if (outage := self.outage(now)) is not None:
            ends.append(outage)
        return min(ends, default=None)


class ApplyRoleChanges:
    """Apply what is due in the role queue. Safe to run in several processes at once: each
    pass claims a batch that no other worker gets, then makes one call to Discord per change,
    none for a server whose rate limit Discord said was used up (by a 429, or by an answer
    saying no call is left) until it resets.
    At least once: a worker that dies after a call leaves the change to be sent again, which
    Discord takes as a no-op.

    Only the roles of ``linked_roles`` (the setting) are added. A change for another role (one
    taken out of the setting, whose changes were queued or retrying then) is finished without
    calling Discord, unless it is a removal and its member is not linked: the operator
    stopped the service handing out that role (perhaps because it was the wrong one), but
    the removal was asked for by an unlink while the role was configured, and the service
    never leaves a role it may have given on an unlinked member. ``roles sync`` asks
    for the add again if the role is configured again. ``only_configured`` (``roles sync``,
    whose setting may name fewer roles than the service's) leaves the changes of other roles
    in the queue, to the service's workers."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        roles: DiscordGuildRoles,
        *,
        linked_roles: Sequence[LinkedRole],
        pauses: RolePauses | None = None,
        jitter: Callable[[], float] = _RANDOM.random,
        only_configured: bool = False,
    ) -> None:
        """``pauses``: the process's (a fresh one: this pass's only); ``jitter``: a number
        from 0 to 1, how far into its spread a held-back change comes due."""
        self._uow, self._clock, self._roles = uow, clock, roles
        self._configured = frozenset(linked_roles)
        self._only = self._configured if only_configured else None
        self._pauses = pauses if pauses is not None else RolePauses()
        self._jitter = jitter
        # Calls of this pass in a row that found Discord unavailable.
        self._failures = FailuresInARow(self._pauses.down)

    async def execute(
        self, limit: int = 20, *, stopping: Stopping | None = None
    ) -> RoleChangeReport:
        """``stopping``: the worker's, when its process stops; the pass then applies nothing
        more, and lets go of the rest of its batch (see ``Claims``)."""
        report = RoleChangeReport()
        self._failures.new_pass()
        now = self._clock.now()
        await self._pauses.catch_up({role.guild_id for role in self._configured}, now)
        if (everywhere := self._pauses.everywhere(now)) is not None:
            return replace(report, paused_until=everywhere)  # nothing may be sent: no claim
        paused = self._pauses.paused_servers(now)
        # The roles Discord refused for every member during this pass: the rest of the batch
        # was claimed before, and is not among the queued changes refused then.
        refused: dict[LinkedRole, RoleCallResult] = {}
        async with Claims(self._uow, self._clock, _release, stopping) as claims:
            async with self._uow() as uow:  # one short transaction: no lock outlives it
                claims.took(
                    await uow.role_changes.claim_due(
                        now, now + CLAIM_LEASE, limit, skip_guilds=paused, roles=self._only
                    )
                )
                await uow.commit()
            for change in claims:
                await self._one(change, report, claims, refused)
        return replace(report, paused_until=self._pauses.next_end(self._clock.now()))

    async def _one(
        self,
        change: RoleChange,
        report: RoleChangeReport,
        claims: Claims[RoleChange],
        refused: dict[LinkedRole, RoleCallResult],
    ) -> None:
        await self._pauses.catch_up((change.role.guild_id,), self._clock.now())
        until = self._pauses.until(change.role.guild_id, self._clock.now())
        if until is not None:
            # Discord rate limited us: the rest of the batch waits too, untried (every call
            # until then would be refused, and too many refusals get a bot banned).
            await self._write_back(self._held_back(change, until), report.retrying, report)
            return
        if (down := self._pauses.outage(self._clock.now())) is not None:
            # Discord failed the last calls in a row: the rest of the batch waits, untried.
            held = self._held_back(change, down, RoleCallOutcome.UNAVAILABLE)
            await self._write_back(held, report.held_back, report)
            return
        refusal = refused.get(change.role) or self._pauses.refusal(
            change.requested_at, self._clock.now()
        )
        if refusal is not None:
            await self._refuse_unsent(change, refusal, report)
            return
        await self._apply(change, report, claims, refused)

    def _held_back(
        self,
        change: RoleChange,
        until: datetime,
        why: RoleCallOutcome = RoleCallOutcome.RATE_LIMITED,
    ) -> RoleChange:
        """``change``, due a little after ``until`` (spread: not all at one instant)."""
        wait = until - self._clock.now()
        spread = min(max(wait * JITTER_SHARE, JITTER_MIN), JITTER_MAX)
        due = until + spread * min(max(self._jitter(), 0.0), 1.0)
        return replace(change, next_attempt_at=due, last_error=why.value)

    def _unconfigured(self, change: RoleChange) -> RoleChange:
        return replace(
            change,
            status=RoleChangeStatus.REFUSED,
            finished_at=self._clock.now(),
            last_error=NOT_CONFIGURED,
        )

    async def _refuse_unsent(
        self, change: RoleChange, refusal: RoleCallResult, report: RoleChangeReport
    ) -> None:
        now = self._clock.now()
        after = replace(
            change,
            status=RoleChangeStatus.REFUSED,
            finished_at=now,
            last_error=refusal.outcome.value,
        )
        detail = {"reason": refusal.outcome.value, "sent": "no"}
        audit = self._audit(AuditKind.DISCORD_ROLE_REFUSED, after, now, **detail)
        await self._write_back(after, report.refused_unsent, report, audit)

    async def _apply(
        self,
        change: RoleChange,
        report: RoleChangeReport,
        claims: Claims[RoleChange],
        refused: dict[LinkedRole, RoleCallResult],
    ) -> None:
        """Send one change (unless it is no longer this worker's). When Discord rate limited
        it, pause its server (or everything); when it refused it for the whole role, refuse
        the role's other changes, those in the queue and the rest of the batch (``refused``);
        a bad token, hold that refusal for every role."""
        now = self._clock.now()
        async with self._uow() as uow:
            held = await uow.role_changes.renew_claim(change, now + CLAIM_LEASE)
            if held is None:  # the claim ran out meanwhile: another worker has it now
                return
            link = await uow.links.get_by_discord_id(held.discord_id)
            await uow.commit()
            claims.holding(held)  # cut off during the call, it is let go as this
        if held.role not in self._configured and (
            link is not None or held.action is RoleAction.ADD
        ):
            # A role out of the setting is no longer handed out; a removal an unlink asked for
            # (while it was configured, or since, Discord having taken its add) still goes out
            # to a member who is not linked, but an add is not turned into one (the service
            # may never have given the role).
            await self._write_back(self._unconfigured(held), report.unconfigured, report)
            return
        action = RoleAction.ADD if link is not None else RoleAction.REMOVE
        account_id = link.account_id if link is not None else held.account_id
        held = replace(held, action=action, account_id=account_id)
        if action is RoleAction.ADD:
            result = await self._roles.add_role(held.role, held.discord_id, reason=REASONS[action])
        else:
            result = await self._roles.remove_role(
                held.role, held.discord_id, reason=REASONS[action]
            )
        if result.outcome is RoleCallOutcome.RATE_LIMITED:
            # Not an attempt that counts towards giving up: the change waits for the pause
            # (this server's, or every call's), then goes out like the rest held back.
            self._answered(result, self._clock.now())
            until = self._pauses.rate_limited(held.role.guild_id, result, self._clock.now())
            await self._pauses.share(self._clock.now())  # the other instances wait too
            after, bucket, audit = self._held_back(held, until), report.retrying, None
        else:
            now = self._clock.now()
            self._answered(result, now)
            if result.reset_after is not None:
                self._pauses.used_up(held.role.guild_id, result.reset_after, now)
                await self._pauses.share(now)
            if result.outcome is RoleCallOutcome.DONE:
                self._pauses.went_through()
            elif _whole_role(result):
                refused[held.role] = result
            elif result.outcome is RoleCallOutcome.REJECTED and result.status == 401:
                self._pauses.token_refused(result, now)
            after, bucket, audit = self._outcome(held, result, report)
        await self._write_back(after, bucket, report, audit, called=True)
        if _whole_role(result):
            await self._refuse_queued(held.role, result, report)

    def _answered(self, result: RoleCallResult, now: datetime) -> None:
        """Count the calls of this pass in a row that found Discord unavailable: the
        ``OUTAGE_THRESHOLD``-th pauses the rest (``DiscordOutage``); any answer from Discord
        (a 429 or a refusal too) says it is not down."""
        if result.outcome is RoleCallOutcome.UNAVAILABLE:
            self._failures.unavailable(now)
        else:
            self._failures.answered()

    async def _refuse_queued(
        self, role: LinkedRole, refusal: RoleCallResult, report: RoleChangeReport
    ) -> None:
        """Discord refused ``role`` for every member: its changes in the queue now (waiting,
        retrying, held back by a rate limit; not those another worker is sending) are
        refused for the same reason without asking it, wherever they were asked for. What is
        in the queue decides, not the time each was asked for: those times come from the
        clocks of the processes that asked, which no two hosts share exactly. A change asked
        for after this is sent (a new link, ``roles sync`` once it is fixed)."""
        now = self._clock.now()
        reason = refusal.outcome.value
        async with self._uow() as uow:
            queued = await uow.role_changes.refuse_queued(role, now, reason)
            for change in queued:
                detail = {"reason": reason, "sent": "no"}
                await uow.audit.record(
                    self._audit(AuditKind.DISCORD_ROLE_REFUSED, change, now, **detail)
                )
            await uow.commit()
        report.refused_unsent.extend(queued)

    def _outcome(
        self, held: RoleChange, result: RoleCallResult, report: RoleChangeReport
    ) -> tuple[RoleChange, list[RoleChange], AuditEvent | None]:
        now = self._clock.now()
        outcome = result.outcome
        if outcome is RoleCallOutcome.DONE:
            after = replace(
                held,
                status=RoleChangeStatus.DONE,
                attempts=held.attempts + 1,
                finished_at=now,
                last_error=None,
            )
            return after, report.done, self._audit(_DONE[held.action], after, now)
        if outcome in REFUSALS:
            after = replace(
                held,
                status=RoleChangeStatus.REFUSED,
                attempts=held.attempts + 1,
                finished_at=now,
                last_error=outcome.value,
            )
            detail = {"reason": outcome.value}
            if result.status is not None:
                detail["status"] = str(result.status)
            audit = self._audit(AuditKind.DISCORD_ROLE_REFUSED, after, now, **detail)
            return after, report.refused, audit
        attempts = held.attempts + 1
        if attempts >= MAX_ATTEMPTS:
            after = replace(
                held,
                status=RoleChangeStatus.FAILED,
                attempts=attempts,
                finished_at=now,
                last_error=outcome.value,
            )
            audit = self._audit(AuditKind.DISCORD_ROLE_FAILED, after, now, reason=outcome.value)
            return after, report.failed, audit
        after = replace(
            held,
            attempts=attempts,
            next_attempt_at=now + RETRY_DELAYS[attempts - 1],
            last_error=outcome.value,
        )
        return after, report.retrying, None

    @staticmethod
    def _audit(kind: AuditKind, change: RoleChange, now: datetime, **detail: str) -> AuditEvent:
        return AuditEvent(
            kind,
            now,
            change.account_id,
            change.discord_id,
            {
                "action": change.action.value,
                "guild_id": str(change.role.guild_id),
                "role_id": str(change.role.role_id),
                **detail,
            },
        )

    async def _write_back(
        self,
        after: RoleChange,
        bucket: list[RoleChange],
        report: RoleChangeReport,
        audit: AuditEvent | None = None,
        *,
        called: bool = False,
    ) -> None:
        gave = called and after.action is RoleAction.ADD and after.status in ADD_MAY_HAVE_GIVEN
        async with self._uow() as uow:
            # Discord took an add (or may have: given up after a timeout): the member may have
            # unlinked while it was on its way, on an instance whose setting does not name the
            # role. That unlink asked to remove only the roles whose add Discord may have taken
            # then (``queue_role_changes``), not this one (pending), so the removal is asked
            # for here. The link is held (before the row, in the order an
            # unlink takes them): an unlink not committed yet is waited for, and one that
            # comes after this commits sees the add done.
            link = await uow.links.hold_by_discord_id(after.discord_id) if gave else None
            finished = await uow.role_changes.finish(after)
            if audit is not None:  # Discord changed (or refused) whatever happens to the row
                await uow.audit.record(audit)
            if called and not finished:
                # Our call may have reached Discord after a later one: a newer request came
                # meanwhile, or our claim ran out (a stall) and another worker sent the row's
                # next change, which ours may have undone. Ask again: the next pass decides
                # from the link as it is then (a no-op for Discord when nothing is wrong).
                await uow.role_changes.request(self._again(after))
            elif gave and link is None:
                removal = replace(after, action=RoleAction.REMOVE)
                await uow.role_changes.request(self._again(removal))
            await uow.commit()
        (bucket if finished else report.superseded).append(after)

    def _again(self, change: RoleChange) -> RoleChange:
        """The row asked for again, due now: its newer request was due now, with a fresh
        round of tries (this call's back-off after a failure, hours after several, is not
        the newer request's). Only a rate limit's wait stands: Discord said when."""
        now = self._clock.now()
        limited = change.last_error == RoleCallOutcome.RATE_LIMITED.value
        due = max(now, change.next_attempt_at) if limited else now
        return RoleChange(
            change.discord_id, change.role, change.action, now, due, account_id=change.account_id
        )


async def _release(uow: UnitOfWork, change: RoleChange, now: datetime) -> bool:
    return await uow.role_changes.release(change)


@dataclass(frozen=True, slots=True)
class RolesRequested:
    additions: int  # for linked members
    removals: int  # for unlinked members who may still have the role

    @property
    def total(self) -> int:
        return self.additions + self.removals


class RequestRolesForLinks:
    """``taskflow-link roles sync``: ask for the roles of every linked member, through the
    queue (so a concurrent unlink still wins). By default only where no add is pending or
    done: members linked before the role was configured, and those Discord refused (not in
    the server then, a role or permission missing then). ``every``: all of them again (a
    role someone removed by hand in Discord comes back). Removals Discord refused or that
    were given up are asked for again too, and so are removals never queued (an unlink made
    by an instance whose settings named no role left the row saying "added", or saying an
    add was refused after an earlier one went through): an unlinked member must not keep
    the role."""

    def __init__(
        self, uow: UnitOfWorkFactory, clock: Clock, *, linked_roles: Sequence[LinkedRole] = ()
    ) -> None:
        self._uow, self._clock, self._roles = uow, clock, tuple(linked_roles)

    async def execute(self, *, every: bool = False) -> RolesRequested:
        """How many role changes were queued: adds for linked members, removals for
        unlinked ones."""
        now = self._clock.now()
        additions = removals = 0
        async with self._uow() as uow:
            for role in self._roles:
                additions += await uow.role_changes.request_for_links(role, now, every=every)
                removals += await uow.role_changes.retry_removals(role, now)
                removals += await uow.role_changes.request_for_unlinked(role, now)
            await uow.commit()
        return RolesRequested(additions, removals)


@dataclass(frozen=True, slots=True)
class RoleQueue:
    pending: int
    next_attempt_at: datetime | None  # the earliest, among the pending ones


class ShowRoleQueue:
    """The queue of the configured roles (``roles sync`` leaves the others' to the
    service)."""

    def __init__(self, uow: UnitOfWorkFactory, *, linked_roles: Sequence[LinkedRole]) -> None:
        self._uow, self._roles = uow, frozenset(linked_roles)

    async def execute(self) -> RoleQueue:
        async with self._uow(read_only=True) as uow:
            pending, earliest = await uow.role_changes.pending(self._roles)
        return RoleQueue(pending, earliest)


class CountRoleChanges:
    """``roles sync``'s account of the changes it asked for: those of the configured roles
    asked for since it began, as they are now, whoever applied them. The service's role
    workers are woken by the same commit (on Postgres every instance, by ``NOTIFY``) and
    take their share of the queue: counting only what the command sent itself left out what
    they did, and the refusals they met."""

    def __init__(self, uow: UnitOfWorkFactory, *, linked_roles: Sequence[LinkedRole]) -> None:
        self._uow, self._roles = uow, frozenset(linked_roles)

    async def execute(self, since: datetime) -> list[RoleChangeCount]:
        async with self._uow(read_only=True) as uow:
            counts = await uow.role_changes.counts_since(since)
        return [count for count in counts if count.role in self._roles]
