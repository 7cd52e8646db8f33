"""What a pass over a queue holds under its lease, and letting go of it when the pass ends
early: one implementation for every queue (email, webhooks, the role for linked members,
Linked Roles).

A worker's pass claims a batch (a lease: rows no other worker takes until it runs out, two
to five minutes), then works it one row at a time, one outside call each (SMTP, a webhook
receiver, Discord). A process that stopped (SIGTERM, Ctrl-C, a rolling deploy) left every
row it had claimed and not finished under that lease, and another instance took them only
once it ran out, though nobody was working on them any more.

Now the worker says when its process stops (``Stopping``): the pass starts no further row,
and ``Claims`` lets go at once of the rows it never started, due for the next worker, and
wakes the workers. The row whose call is under way is left to finish for a while (the
worker's grace, ``TASKFLOW_LINK_SHUTDOWN_TIMEOUT_SECONDS``), and its outcome written back as
any other: no delay, and nothing sent twice. A call still under way when the grace ends is
cut off (the pass is cancelled), and its row let go too, due at once. Its outcome is unknown:
it may have reached its receiver, so it goes again (at least once, as after a crash, under
the same ``webhook-id`` for a webhook; Discord takes a role change or a role connection sent
twice as one). Waiting out the lease instead would not spare that duplicate, since the row
goes again once the lease runs out all the same; it would only delay it by minutes (and for
a webhook, every later delivery to that endpoint, which waits behind it). The cut-off
attempt is not counted towards giving up: it did not fail. One call may not go again: a
Linked Roles refresh, whose answer replaces the refresh token it spends. It and the storing
of its answer end first (``_uncut``), and the worker waits for them before the process
closes the database.

A pass that fails (the database went away, a bug) lets go of the rows it never started as
well, but leaves the one under way under its lease: a row that breaks every pass must not be
tried again at once, in a loop (its lease is then its back-off)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Generic, Self, TypeVar

from domain.ports import Clock, UnitOfWork, UnitOfWorkFactory

Row = TypeVar("Row")
# How a queue lets go of one row it holds, in a unit of work, at ``now`` (``False``: the row
# was no longer held by this worker: another took it over, or it finished).
Release = Callable[[UnitOfWork, Row, datetime], Awaitable[bool]]


class Stopping:
    """A worker's word to its passes that its process is stopping: set once, never unset."""

    __slots__ = ("_asked",)

    def __init__(self) -> None:
        self._asked = False

    def ask(self) -> None:
        self._asked = True

    @property
    def asked(self) -> bool:
        return self._asked


class Claims(Generic[Row]):
    """The rows a pass claimed, handed out one at a time while the pass may go on; what it
    still holds when it ends early is let go (see the module's doc). Used as::

        async with Claims(uow, clock, release, stopping) as claims:
            async with uow() as u:
                claims.took(await u.queue.claim_due(...))  # before the commit
                await u.commit()
            for row in claims:
                row = await renew(row)
                claims.holding(row)  # the lease as it now stands
                ...
    """

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        release: Release[Row],
        stopping: Stopping | None = None,
    ) -> None:
        self._uow, self._clock, self._release = uow, clock, release
        self._stopping = stopping
        self._untried: list[Row] = []
        self._under_way: Row | None = None

    @property
    def stopping(self) -> bool:
        """Whether the worker's process is stopping: start nothing more."""
        return self._stopping is not None and self._stopping.asked

    def took(self, rows: Sequence[Row]) -> None:
        """Rows just claimed. Told inside the claiming transaction, before its commit: a
        pass cut off during the commit still lets them go (letting go of a row that was
        never claimed changes nothing)."""
        self._untried.extend(rows)

    def __iter__(self) -> Iterator[Row]:
        """The rows in turn, until the worker stops. A row handed out is under way until the
        next one is asked for."""
        while self._untried and not self.stopping:
            self._under_way = self._untried.pop(0)
            yield self._under_way
            self._under_way = None

    def holding(self, row: Row) -> None:
        """The row under way, as its lease now stands (renewed): what a pass cut off during
        its call lets go."""
        self._under_way = row

    @property
    def left(self) -> int:
        """How many rows are not started yet."""
        return len(self._untried)

    def rest(self) -> list[Row]:
        """Take out the rows not started (the caller lets them go its own way)."""
        rest, self._untried = self._untried, []
        return rest

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        held, self._untried = self._untried, []
        cut_off = exc_type is not None and issubclass(exc_type, asyncio.CancelledError)
        if cut_off and self._under_way is not None:
            held.insert(0, self._under_way)
        self._under_way = None
        if not held:
            return
        if exc_type is None:
            await self.let_go(held)
            return
        # Cut off, or the pass failed: the rows go back all the same if the database lets
        # them (otherwise their lease runs out), and the cut-off (or the pass's own error)
        # stands, not the letting go's: a worker at its stop would say the database is
        # "unreachable; will retry", and a command's Ctrl-C would be reported as an outage.
        with contextlib.suppress(Exception):
            await self.let_go(held)

    async def let_go(self, rows: Sequence[Row]) -> None:
        """Let go of ``rows``, in one transaction."""
        now = self._clock.now()
        async with self._uow() as uow:
            for row in rows:
                await self._release(uow, row, now)
            await uow.commit()
