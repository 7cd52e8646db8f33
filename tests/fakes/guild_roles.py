"""A hand-written ``DiscordGuildRoles`` for unit tests: Discord's member roles as a set, every
call recorded, answers scripted when a test needs Discord to misbehave."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from domain.model import DiscordId, LinkedRole, RoleAction
from domain.ports import Clock, RoleCallOutcome, RoleCallResult


@dataclass(frozen=True)
class RoleCall:
    action: RoleAction
    role: LinkedRole
    member: DiscordId
    reason: str


@dataclass
class Bucket:
    """Discord's limit of the member roles route, per server: ``calls`` per ``window`` from
    the first call of a window; the call that leaves none says for how long (as
    ``X-RateLimit-Remaining: 0`` and ``X-RateLimit-Reset-After`` do), one more is a 429."""

    calls: int
    window: timedelta
    clock: Clock
    windows: dict[DiscordId, tuple[datetime, int]] = field(default_factory=dict)

    def take(self, server: DiscordId) -> tuple[bool, float]:
        """Whether a call may be made now, and the seconds left in its window; counts it."""
        now = self.clock.now()
        ends, made = self.windows.get(server, (now, 0))
        if ends <= now:
            ends, made = now + self.window, 0
        left = (ends - now).total_seconds()
        if made >= self.calls:
            return False, left
        self.windows[server] = (ends, made + 1)
        return True, left

    def empty(self, server: DiscordId) -> bool:
        return self.windows.get(server, (None, 0))[1] >= self.calls


@dataclass
class FakeGuildRoles:
    # Who has which role now (what Discord would show).
    held: set[tuple[LinkedRole, DiscordId]] = field(default_factory=set)
    calls: list[RoleCall] = field(default_factory=list)
    # Answers to give, first to last, before behaving as a healthy Discord again.
    script: list[RoleCallResult] = field(default_factory=list)
    # Run during the next call, while it is "with Discord" (a race to set up).
    during_next_call: Callable[[], Awaitable[None]] | None = None
    # Discord's rate limit of the route, when a test sets one.
    bucket: Bucket | None = None

    def has(self, role: LinkedRole, member: DiscordId) -> bool:
        return (role, member) in self.held

    def answer(self, *outcomes: RoleCallOutcome | RoleCallResult) -> None:
        self.script.extend(
            o if isinstance(o, RoleCallResult) else RoleCallResult(o) for o in outcomes
        )

    async def add_role(self, role: LinkedRole, member: DiscordId, *, reason: str) -> RoleCallResult:
        return await self._call(RoleAction.ADD, role, member, reason)

    async def remove_role(
        self, role: LinkedRole, member: DiscordId, *, reason: str
    ) -> RoleCallResult:
        return await self._call(RoleAction.REMOVE, role, member, reason)

    async def _call(
        self, action: RoleAction, role: LinkedRole, member: DiscordId, reason: str
    ) -> RoleCallResult:
        self.calls.append(RoleCall(action, role, member, reason))
        if self.during_next_call is not None:
            during, self.during_next_call = self.during_next_call, None
            await during()
        if self.bucket is not None:
            allowed, left = self.bucket.take(role.guild_id)
            if not allowed:
                return RoleCallResult(RoleCallOutcome.RATE_LIMITED, retry_after=left, status=429)
        result = self.script.pop(0) if self.script else RoleCallResult(RoleCallOutcome.DONE)
        if self.bucket is not None and self.bucket.empty(role.guild_id):
            result = replace(result, reset_after=left)
        if result.outcome is RoleCallOutcome.DONE:
            if action is RoleAction.ADD:
                self.held.add((role, member))
            else:
                self.held.discard((role, member))
        return result
