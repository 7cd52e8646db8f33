"""Tells the operator when the web instances on one database keep their rate limits, sign-in
throttles and interaction replay guard apart: one without Redis beside another (with Redis or
without), or two with different Redises (or key prefixes). Each would then count on its own,
silently: a client gets each budget once per instance, and an interaction replayed to another
instance than the one that saw it is accepted. The database is what they share for certain,
so each instance announces itself there (``adapters.sql.instances``) and looks at the others.

An instance is named only once it has been seen twice in a row, announcing itself again in
between: an instance being replaced (a rolling restart of one instance without Redis) is gone
by then, one killed without a word stops announcing itself, and instances that read their
Redis's deployment id just before and after Redis restarted empty agree again by then."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime

from adapters.shared_state import SharedState
from adapters.sql.instances import Instance, SqlInstanceRoster
from domain import errors

log = logging.getLogger("taskflow_link.instances")

MEMORY = "memory"
REDIS = "redis"  # with Redis, whose deployment id could not be read this time


def sharing_problems(mine: str, others: Sequence[Instance]) -> dict[str, str]:
    """Per other instance (by id) that keeps its limits and replay guard apart from this
    one's (whose ``shared_state`` is ``mine``), how."""
    problems: dict[str, str] = {}
    for other in others:
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


class InstanceWatch:
    """This instance's announcements, every ``interval`` seconds from ``start`` to ``stop``
    (which deletes its row), and the errors they lead to: one per other instance."""

    def __init__(self, roster: SqlInstanceRoster, shared: SharedState, interval: float) -> None:
        self._roster, self._shared, self._interval = roster, shared, interval
        self._suspects: dict[str, datetime] = {}  # id: when it was last seen, at the last look
        self._named: set[str] = set()
        self._failing = False
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
            others = await self._roster.announce(mine)
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
        problems = sharing_problems(mine, others)
        for other in others:
            how = problems.get(other.id)
            before = self._suspects.get(other.id)
            if how is None or before is None or other.seen_at <= before:
                continue
            if other.id not in self._named:
                self._named.add(other.id)
                log.error(
                    "Another instance uses this database but not this instance's rate limits "
                    "and replay guard: %s; %s. Each counts them on its own: a client gets "
                    "each budget once per instance, and an interaction replayed to the other "
                    "instance is accepted. Give every instance the same TASKFLOW_LINK_REDIS_URL "
                    "and TASKFLOW_LINK_REDIS_KEY_PREFIX (see Running several instances in the "
                    "README).",
                    other,
                    how,
                )
        self._suspects = {o.id: o.seen_at for o in others if o.id in problems}

    async def _run(self) -> None:
        while True:
            await self.check()
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
            async with asyncio.timeout(self._interval):
                await self._roster.leave()
