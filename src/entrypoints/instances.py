"""Tells the operator when processes on one database keep apart what they must share:
- web instances, their rate limits, sign-in throttles and interaction replay guard (each would
  count on its own, silently: a client gets each budget once per instance, and an interaction
  replayed to another instance than the one that saw it is accepted);
- copies of the gateway bot that receive the same interactions (unsharded, or running a shard
  in common), their claims on them (each would run every command: a ``/link`` button shown is
  then spent by the other copy's later ticket);
- processes of either kind, their webhook URLs: each queues a change's events for the URLs of
  its own settings, so a link or unlink made through one never reaches a URL only the other
  names (a receiver that missed a ``link.deleted`` keeps the member linked);
- processes of either kind, what their purge may delete (``TASKFLOW_LINK_AUDIT_RETENTION_DAYS``,
  and the webhook URLs again): each purges by its own settings, so the shortest retention
  would win. The purge itself now deletes only what every live process would (``PurgeExpired``
  with ``SqlPurgePeers``); this says why it keeps more than a process's own settings ask.
They share through Redis, and keep apart with none beside another (with Redis or without), or
two different Redises (or key prefixes). The database is what they share for certain, so each
announces itself there (``adapters.sql.instances``) and looks at the others.

One is named only once it has been seen twice in a row, announcing itself again in between:
an instance being replaced (a rolling restart of one instance without Redis) is gone by then,
one killed without a word stops announcing itself, and instances that read their Redis's
deployment id just before and after Redis restarted empty agree again by then."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from adapters.shared_state import SharedState
from adapters.sql import SqlDatabase
from adapters.sql.instances import Instance, SqlInstanceRoster
from domain import errors
from domain.webhooks import endpoints_digest

if TYPE_CHECKING:
    from entrypoints.container import Container
    from entrypoints.settings import ShardPlan

log = logging.getLogger("taskflow_link.instances")

MEMORY = "memory"
REDIS = "redis"  # with Redis, whose deployment id could not be read this time
WEB = "web"
GATEWAY = "gateway"

# What each kind shares through Redis, and what keeping it apart does.
_WHAT = {
    WEB: (
        "web instance",
        "rate limits, sign-in throttles, interaction replay guard and Discord's rate limits",
        "Each counts them on its own: a client gets each budget once per instance, an "
        "interaction replayed to the other instance is accepted, and each learns of Discord's "
        "429s from its own refused calls.",
    ),
    GATEWAY: (
        "copy of the gateway bot",
        "claims on the interactions both receive (the same shards)",
        "Each runs every command: a /link button one shows is spent by the other's later "
        'ticket ("already used").',
    ),
}


def _retention(days: int) -> str:
    return "forever" if days == 0 else f"{days} days"


class Roster(Protocol):
    """This process's row among the processes announced in the database, and the others'
    (``SqlInstanceRoster``; the tests' in memory)."""

    @property
    def kind(self) -> str: ...

    async def announce(
        self,
        shared_state: str,
        *,
        webhooks: str | None = None,
        audit_retention_days: int | None = None,
    ) -> Sequence[Instance]: ...

    async def clock_offset(self) -> timedelta | None: ...

    async def leave(self) -> None: ...


# How far a process's clock may be from the database server's before it says so. Instances
# compare the times they write (claims' leases, the password backoff, the life of tickets and
# sign-ins, this roster): a host whose clock drifted apart changes them all, silently.
CLOCK_TOLERANCE = timedelta(seconds=10)


def _duration(offset: timedelta) -> str:
    seconds = abs(offset.total_seconds())
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def gateway_kind(shards: ShardPlan | None) -> str:
    """A gateway bot's kind: ``gateway`` (every shard), or with its shards, runs of them as
    ranges (``gateway 0-3,8/16``): a copy may run thousands."""
    if shards is None:
        return GATEWAY
    runs: list[str] = []
    ids = sorted(shards.ids)
    start = 0
    for end, shard in enumerate(ids):
        if end + 1 == len(ids) or ids[end + 1] != shard + 1:
            first = ids[start]
            runs.append(str(first) if first == shard else f"{first}-{shard}")
            start = end + 1
    return f"{GATEWAY} {','.join(runs)}/{shards.count}"


def _shards(kind: str) -> tuple[set[int], int] | None:
    """A gateway kind's shards and count (``None``: every shard)."""
    _, _, plan = kind.partition(" ")
    listed, _, count = plan.partition("/")
    ids: set[int] = set()
    try:
        for run in listed.split(","):
            first, _, last = run.partition("-")
            ids.update(range(int(first), int(last or first) + 1))
        return ids, int(count)
    except ValueError:
        return None


def _receive_alike(mine: str, theirs: str) -> bool:
    """Whether two processes of these kinds must share their state: two web instances, or two
    copies of the gateway bot that receive some of the same interactions (one of them runs
    every shard, or a shard in common). Discord sends a server's interactions to each
    connection whose shard is the server's by its own count (``(id >> 22) % count``): with
    counts n and m, shard a of n and shard b of m have servers in common when a and b agree
    modulo gcd(n, m) (while a bot is resharded; DMs go to shard 0 of each)."""
    if WEB in (mine, theirs):
        return mine == theirs
    if not (mine.startswith(GATEWAY) and theirs.startswith(GATEWAY)):
        return False
    one, other = _shards(mine), _shards(theirs)
    if one is None or other is None:
        return True
    common = math.gcd(one[1], other[1])
    return bool({a % common for a in one[0]} & {b % common for b in other[0]})


def sharing_problems(kind: str, mine: str, others: Sequence[Instance]) -> dict[str, str]:
    """Per other process (by id) that keeps apart what this one (of ``kind``, whose
    ``shared_state`` is ``mine``) shares with it, how."""
    problems: dict[str, str] = {}
    for other in others:
        if not _receive_alike(kind, other.kind):
            continue
        theirs = other.shared_state
        if mine == MEMORY and theirs == MEMORY:
            how = "neither it nor this one has TASKFLOW_LINK_REDIS_URL"
        elif mine == MEMORY:
            how = "it has Redis, this one has no TASKFLOW_LINK_REDIS_URL"
        elif theirs == MEMORY:
            how = "this one has Redis, it has no TASKFLOW_LINK_REDIS_URL"
        elif REDIS not in (mine, theirs) and mine != theirs:
            how = "it uses another Redis, or another TASKFLOW_LINK_REDIS_KEY_PREFIX, than this one"
        else:  # the same Redis, or one that could not be asked this time
            continue
        problems[other.id] = how
    return problems


def instance_watch(container: Container, kind: str) -> InstanceWatch | None:
    """This process's watch as ``kind``; none on the memory storage or an in-memory SQLite
    database, which no other process can share."""
    database = container.storage()
    if not isinstance(database, SqlDatabase) or not database.shared_between_processes:
        return None
    settings = container.settings()
    return InstanceWatch(
        SqlInstanceRoster(database, container.clock(), kind),
        container.shared_state(),
        settings.instance_check_seconds,
        leave_within=settings.shutdown_timeout_seconds,
        webhooks=endpoints_digest(container.webhook_outbox().endpoints),
        audit_retention_days=settings.audit_retention_days,
    )


class InstanceWatch:
    """This instance's announcements, every ``interval`` seconds from ``start`` to ``stop``
    (which deletes its row), and the errors they lead to: one per other instance."""

    def __init__(
        self,
        roster: Roster,
        shared: SharedState,
        interval: float,
        *,
        leave_within: float = 10.0,
        webhooks: str | None = None,
        audit_retention_days: int | None = None,
    ) -> None:
        """``leave_within``: how long ``stop`` gives the database to delete this row (the
        shutdown's budget: a database that hangs must not hold the process); ``webhooks``:
        this process's ``endpoints_digest`` of its webhook URLs; ``audit_retention_days``: its
        TASKFLOW_LINK_AUDIT_RETENTION_DAYS (0: forever)."""
        self._roster, self._shared, self._interval = roster, shared, interval
        self._leave_within = leave_within
        self._webhooks = webhooks
        self._audit_retention_days = audit_retention_days
        self._retention_suspects: dict[str, datetime] = {}  # the same, for the retention
        self._retention_named: set[str] = set()
        self._suspects: dict[str, datetime] = {}  # id: when it was last seen, at the last look
        self._named: set[str] = set()
        self._webhook_suspects: dict[str, datetime] = {}  # the same, for the webhook URLs
        self._webhooks_named: set[str] = set()
        self._failing = False
        self._clock_off = False  # said so, and not said it agrees again since
        self._task: asyncio.Task[None] | None = None

    async def _mine(self) -> str:
        if not self._shared.shared:
            return MEMORY
        deployment = await self._shared.deployment()
        return f"{REDIS} {deployment}" if deployment else REDIS

    async def check(self) -> None:
        """One look: announce this instance, and name each other instance that kept its state
        apart at this look and the one before, having announced itself in between."""
        mine = await self._mine()
        try:
            others = await self._roster.announce(
                mine, webhooks=self._webhooks, audit_retention_days=self._audit_retention_days
            )
            offset = await self._roster.clock_offset()
        except errors.DomainError as exc:  # the database's outage or refusal, said in words
            if not self._failing:
                reason = (
                    f"run `taskflow-link db upgrade`: {exc.missing}"
                    if isinstance(exc, errors.StorageNotReady)
                    else exc.message
                )
                log.warning(
                    "Could not announce this instance in the database (%s); tried again in "
                    "%g s. Until then, instances that share no Redis are not told so.",
                    reason,
                    self._interval,
                )
            self._failing = True
            return
        self._failing = False
        self._check_clock(offset)
        problems = sharing_problems(self._roster.kind, mine, others)
        for other in others:
            how = problems.get(other.id)
            before = self._suspects.get(other.id)
            if how is None or before is None or other.seen_at <= before:
                continue
            if other.id not in self._named:
                self._named.add(other.id)
                noun, shared, consequence = _WHAT[WEB if self._roster.kind == WEB else GATEWAY]
                log.error(
                    "Another %s uses this database but not this one's %s: %s; %s. %s Give "
                    "each the same TASKFLOW_LINK_REDIS_URL and TASKFLOW_LINK_REDIS_KEY_PREFIX "
                    "(see Running several instances in the README).",
                    noun,
                    shared,
                    other,
                    how,
                    consequence,
                )
        self._suspects = {o.id: o.seen_at for o in others if o.id in problems}
        self._name_other_webhooks(others)
        self._name_other_retentions(others)

    def _name_other_webhooks(self, others: Sequence[Instance]) -> None:
        """Names, once, each other process that queues webhooks for other URLs than this one,
        seen so at this look and the one before (as above: not the instance a rolling
        restart that changes the URLs replaces)."""
        differ = {
            o.id
            for o in others
            if None not in (o.webhooks, self._webhooks) and o.webhooks != self._webhooks
        }
        for other in others:
            before = self._webhook_suspects.get(other.id)
            if other.id not in differ or before is None or other.seen_at <= before:
                continue
            if other.id not in self._webhooks_named:
                self._webhooks_named.add(other.id)
                log.error(
                    "Another %s uses this database with other webhook URLs than this one "
                    "(TASKFLOW_LINK_WEBHOOK_URLS): %s. Each queues the webhooks of the links, "
                    "unlinks and accounts it makes for the URLs of its own settings, so those "
                    "of either never reach the URLs only the other names (a receiver that "
                    "misses a link.deleted keeps the member linked). Until they agree, the "
                    "purge keeps every pending webhook delivery (none of a URL one of them no "
                    "longer names goes). Give every web instance and gateway bot the same URLs.",
                    _WHAT[WEB if other.kind == WEB else GATEWAY][0],
                    other,
                )
        self._webhook_suspects = {o.id: o.seen_at for o in others if o.id in differ}

    def _name_other_retentions(self, others: Sequence[Instance]) -> None:
        """Names, once, each other process whose settings keep audit events for another time
        than this one's, seen so at this look and the one before (as above)."""
        mine = self._audit_retention_days
        differ = {
            o.id
            for o in others
            if None not in (o.audit_retention_days, mine) and o.audit_retention_days != mine
        }
        for other in others:
            before = self._retention_suspects.get(other.id)
            if other.id not in differ or before is None or other.seen_at <= before:
                continue
            if other.id in self._retention_named or mine is None:
                continue
            self._retention_named.add(other.id)
            theirs = other.audit_retention_days or 0
            longest = 0 if 0 in (mine, theirs) else max(mine, theirs)
            log.error(
                "Another %s uses this database with another audit retention than this one "
                "(TASKFLOW_LINK_AUDIT_RETENTION_DAYS): %s keeps audit events %s, this one %s. "
                "Every web instance and gateway bot purges by its own settings; until they "
                "agree, each purge deletes only what every process would: %s. Give every web "
                "instance and gateway bot the same value.",
                _WHAT[WEB if other.kind == WEB else GATEWAY][0],
                other,
                _retention(theirs),
                _retention(mine),
                f"audit events older than {longest} days" if longest else "no audit event",
            )
        self._retention_suspects = {o.id: o.seen_at for o in others if o.id in differ}

    def _check_clock(self, offset: timedelta | None) -> None:
        """Says once when this process's clock is off the database server's, and once when
        it agrees again."""
        if offset is None:
            return
        if abs(offset) > CLOCK_TOLERANCE and not self._clock_off:
            self._clock_off = True
            log.error(
                "This host's clock is %s the database server's by %s. Every instance compares "
                "the times the others write: an email or webhook another instance is sending "
                "is sent again once the clocks differ by more than its claim's lease (2 to 3 "
                "minutes), password tries wait less (or more) than they should after another "
                "instance's failures, /link buttons and Discord sign-ins expire early or late, "
                "and instances more than 3 minutes apart do not see each other here. Keep "
                "every host's clock synchronised (NTP), the database server's too.",
                "ahead of" if offset > timedelta(0) else "behind",
                _duration(offset),
            )
        elif abs(offset) <= CLOCK_TOLERANCE and self._clock_off:
            self._clock_off = False
            log.warning("This host's clock agrees with the database server's again")

    async def _run(self) -> None:
        broken = False  # said once per streak
        while True:
            try:
                await self.check()
            except Exception:  # a bug: logged, and the watch goes on (its stop never raises)
                if not broken:
                    log.exception("The instance watch failed; tried again in %g s", self._interval)
                broken = True
            else:
                broken = False
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="instance watch")

    async def stop(self) -> None:
        """Stops announcing and deletes this instance's row (the others stop counting it)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(errors.DomainError, TimeoutError):
            async with asyncio.timeout(self._leave_within):
                await self._roster.leave()
