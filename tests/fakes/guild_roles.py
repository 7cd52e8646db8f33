"""A hand-written ``DiscordGuildRoles`` for unit tests: Discord's member roles as a set, every
call recorded, answers scripted when a test needs Discord to misbehave."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from domain.model import DiscordId, LinkedRole, RoleAction
from domain.ports import RoleCallOutcome, RoleCallResult


@dataclass(frozen=True)
class RoleCall:
    action: RoleAction
    role: LinkedRole
    member: DiscordId
    reason: str


@dataclass
class FakeGuildRoles:
    # Who has which role now (what Discord would show).
    held: set[tuple[LinkedRole, DiscordId]] = field(default_factory=set)
    calls: list[RoleCall] = field(default_factory=list)
    # Answers to give, first to last, before behaving as a healthy Discord again.
    script: list[RoleCallResult] = field(default_factory=list)
    # Run during the next call, while it is "with Discord" (a race to set up).
    during_next_call: Callable[[], Awaitable[None]] | None = None

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
        result = self.script.pop(0) if self.script else RoleCallResult(RoleCallOutcome.DONE)
        if result.outcome is RoleCallOutcome.DONE:
            if action is RoleAction.ADD:
                self.held.add((role, member))
            else:
                self.held.discard((role, member))
        return result
