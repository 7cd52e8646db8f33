"""Pauses of a process's calls to Discord after a rate limit or a block, shared by the features
that call Discord in the background: the role for linked members (``ApplyRoleChanges``, with
the bot's token) and Linked Roles (``RoleConnectionPusher``, with each user's token).

Discord's 429 says how long to wait (``retry_after``), for what it limited: a route, a
server's members, a token's global limit. Cloudflare's answer to an address that made too many
requests (an HTML 429, or a 403 that blocks the address) does not say, and holds for every
call of the process, whatever the feature or the token: too many refused calls (Discord bans
an address for 10,000 in 10 minutes) make it longer.

Several instances share the bot token and the application, so Discord's 429s with
``retry_after`` answer them all: with a ``SharedDiscordPauses`` (Redis), each instance tells
the others of those it meets, and takes theirs before its calls, instead of each learning of a
pause from a refused call of its own. A block stays the process's: it is the address's, and
instances on other hosts have other addresses.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from datetime import datetime, timedelta

from domain.ports import DISCORD_PAUSE_MAX, SharedDiscordPauses

# Cloudflare's block says nothing of how long: every call of the process waits this long, each
# step after another block in a row, back to the first after a call goes through.
CLOUDFLARE_PAUSES = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(hours=1),
)
# A retry_after beyond this is taken as this (another instance's pause too).
RETRY_AFTER_MAX = DISCORD_PAUSE_MAX


def _name(scope: Hashable) -> str:
    """A scope's name among the instances (``("server", 42)``: ``server:42``)."""
    return ":".join(map(str, scope)) if isinstance(scope, tuple) else str(scope)


class DiscordPauses:
    """Until when this process makes no calls to Discord: per scope (what a 429 with
    ``retry_after`` limited; each feature names its own), and for every scope while the
    address is blocked. One per process, kept across passes, so that every pass of every
    worker (and a CLI command's) waits instead of asking again; with ``shared``, the scopes'
    pauses are every instance's (``share``, ``catch_up``)."""

    def __init__(self, shared: SharedDiscordPauses | None = None) -> None:
        self._scopes: dict[Hashable, datetime] = {}
        self._blocked_until: datetime | None = None
        self._blocks = 0  # blocks in a row: since a call last went through
        self._shared = shared
        self._unshared: dict[Hashable, datetime] = {}  # met here, not told to the others yet

    async def share(self, now: datetime) -> None:
        """Tell the other instances of the pauses this process met since it last did."""
        if self._shared is None or not self._unshared:
            return
        pauses = {
            _name(scope): (until - now).total_seconds()
            for scope, until in self._unshared.items()
            if until > now
        }
        self._unshared = {}
        if pauses:
            await self._shared.publish(pauses)

    async def catch_up(self, scopes: Iterable[Hashable], now: datetime) -> None:
        """Take the pauses the other instances met in ``scopes`` (after telling them of this
        process's): before a call in them."""
        if self._shared is None:
            return
        await self.share(now)
        named = {_name(scope): scope for scope in scopes}
        for name, seconds in (await self._shared.read(list(named))).items():
            if name in named and seconds > 0:  # NaN is not
                # Bounded as a 429's own (``limited``): no instance publishes more, and a
                # value written otherwise (by hand, a compromised store) would pause every
                # call of every instance for as long as it said (beyond what a date holds:
                # an OverflowError at each call's catch-up, so no call ever again).
                wait = timedelta(seconds=min(seconds, RETRY_AFTER_MAX.total_seconds()))
                scope, until = named[name], now + wait
                self._scopes[scope] = max(until, self._scopes.get(scope, until))

    def limited(self, scope: Hashable, retry_after: float | None, now: datetime) -> datetime:
        """After Discord's 429 to a call in ``scope``: no call in ``scope`` until its
        ``retry_after``; without one (Cloudflare's), a block of every call (``blocked``).
        When calls in ``scope`` may be made again."""
        if retry_after is None or math.isnan(retry_after):  # NaN says no more than nothing
            self.blocked(now)
        else:
            # Capped as a number: a timedelta cannot hold 1e300 seconds (nor infinity, which
            # is what JSON's 1e400 parses to).
            seconds = min(max(retry_after, 0.0), RETRY_AFTER_MAX.total_seconds())
            wait = timedelta(seconds=seconds)
            self.pause(scope, now + wait)
        return self.until((scope,), now) or now

    def blocked(self, now: datetime) -> datetime:
        """The address is blocked: every call waits for the next step of
        ``CLOUDFLARE_PAUSES``; until when."""
        step = CLOUDFLARE_PAUSES[min(self._blocks, len(CLOUDFLARE_PAUSES) - 1)]
        self._blocks += 1
        until = now + step
        self._blocked_until = max(until, self._blocked_until or until)
        return self._blocked_until

    def went_through(self) -> None:
        """A call succeeded: the next block pauses for the first step again."""
        self._blocks = 0

    def pause(self, scope: Hashable, until: datetime) -> None:
        """No calls in ``scope`` before ``until``."""
        self._scopes[scope] = max(until, self._scopes.get(scope, until))
        if self._shared is not None:
            self._unshared[scope] = max(until, self._unshared.get(scope, until))

    def block_ends(self, now: datetime) -> datetime | None:
        """When the block holding at ``now`` ends (``None``: none holds)."""
        ends = self._blocked_until
        return ends if ends is not None and ends > now else None

    def paused(self, now: datetime) -> dict[Hashable, datetime]:
        """The scopes paused at ``now``, and until when (those whose pause ended are
        forgotten); a block is not among them (``block_ends``)."""
        self._scopes = {scope: until for scope, until in self._scopes.items() if until > now}
        return dict(self._scopes)

    def until(self, scopes: tuple[Hashable, ...], now: datetime) -> datetime | None:
        """When a call that each of ``scopes`` limits may be made; ``None``: now."""
        paused = self.paused(now)
        ends = [paused[s] for s in scopes if s in paused]
        if (block := self.block_ends(now)) is not None:
            ends.append(block)
        return max(ends, default=None)


# Discord down (5xx, timeouts, no connection): after this many calls of a pass in a row found
# it so, the rest of the pass (and every later pass of the process) waits for the next step of
# OUTAGE_PAUSES, instead of calling for each item of a backlog in turn; then a pass tries again
# (failing again: the next step), and any answer from Discord starts from the first step.
OUTAGE_THRESHOLD = 3
OUTAGE_PAUSES = (
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=5),
)


class DiscordOutage:
    """Whether Discord is taken as down for a feature's calls of this process, and until
    when. The process's own (an outage may be this host's network), never shared. Counted
    by each pass (``FailuresInARow``)."""

    def __init__(self) -> None:
        self._outages = 0  # outage pauses in a row (without an answer between them)
        self._until: datetime | None = None

    def unavailable(self, now: datetime) -> datetime:
        """Discord failed ``OUTAGE_THRESHOLD`` calls of a pass in a row: every call waits for
        the next step of ``OUTAGE_PAUSES``; until when."""
        step = OUTAGE_PAUSES[min(self._outages, len(OUTAGE_PAUSES) - 1)]
        self._outages += 1
        self._until = now + step
        return self._until

    def answered(self) -> None:
        """Discord answered a call, whatever it said: it is not down (an outage's pause
        ends, and the next one starts from the first step)."""
        self._outages = 0
        self._until = None

    def until(self, now: datetime) -> datetime | None:
        """When the pause after Discord failed too many calls in a row ends (``None``: no
        such pause holds at ``now``)."""
        until = self._until
        return until if until is not None and until > now else None


class FailuresInARow:
    """One pass's calls in a row that found Discord unavailable (5xx, timeouts, no
    connection): the ``OUTAGE_THRESHOLD``-th starts ``outage``'s pause (what follows in the
    pass is held back); any answer from Discord (a 429 or a refusal too) says it is not
    down. Start a pass with ``new_pass``: failures of passes apart are not in a row."""

    def __init__(self, outage: DiscordOutage) -> None:
        self._outage = outage
        self._failures = 0

    def new_pass(self) -> None:
        self._failures = 0

    def answered(self) -> None:
        self._failures = 0
        self._outage.answered()

    def unavailable(self, now: datetime) -> None:
        if (failures := self._failures + 1) >= OUTAGE_THRESHOLD:
            self._failures = 0  # what follows is held back
            self._outage.unavailable(now)
        else:
            self._failures = failures
