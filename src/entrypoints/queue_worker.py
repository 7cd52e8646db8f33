"""The loop of a background queue worker (the email queue, the Discord role queue) in a serving
process (the web app, the gateway bot). Several processes may run one each: each pass claims
a batch no other worker gets.

A worker looks at its queue when it starts, whenever it is woken, and every ``poll_seconds``.
Its ``QueueListener`` wakes it when its own process commits work for it (the bell), and, on
Postgres, when any instance does (LISTEN/NOTIFY): work queued anywhere is done at once, and the
poll is only the safety net.

When its process stops, a worker that is waiting stops at once. One in a pass starts nothing
more: the rows its pass claimed and never started are let go at once, for the other
instances (woken), and the call under way gets ``stop_seconds`` to finish and have its outcome
written back; a call still under way then is cut off, and its row let go too (at least once:
see ``domain.use_cases._claims``), except a step the cut-off does not split (a Linked Roles
refresh and the storing of its answer), which ends first: ``stop`` waits for it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from datetime import datetime
from typing import TYPE_CHECKING

from domain import errors
from domain.ports import QueueListener
from domain.use_cases import Stopping
from entrypoints.health import failure_kind

if TYPE_CHECKING:
    from entrypoints.container import Container


class StorageTrouble:
    """A worker's passes that could not use the database: unreachable, or without this
    version's tables (``db upgrade`` not run yet), which only the operator can change. Said
    once per streak, and once more when it changes kind: a worker polls every few seconds, and
    a line each time (an instance started before ``db upgrade``, an outage) buried the rest
    of the log. The first pass that works again says so."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log, self._what = log, what
        self._said: str | None = None  # the kind of trouble last said, while it lasts

    def failed(self, exc: errors.StorageError) -> None:
        if isinstance(exc, errors.StorageContention):  # the database answered: no outage
            self._log.warning(
                "%s: the pass was rolled back by the database for another transaction (a "
                "deadlock broken); will retry",
                self._what,
            )
            return
        kind = f"not ready: {exc.missing}" if isinstance(exc, errors.StorageNotReady) else ""
        if (kind or "unreachable") == self._said:
            return
        self._said = kind or "unreachable"
        if isinstance(exc, errors.StorageNotReady):
            self._log.error(
                "%s: the database has not got this version's tables (%s): run `taskflow-link "
                "db upgrade`; will retry (said once until it works)",
                self._what,
                exc.missing,
            )
        else:
            self._log.warning(
                "%s unreachable (database%s); will retry (said once until it works)",
                self._what,
                f": {failure_kind(exc.__cause__)}" if exc.__cause__ is not None else "",
            )

    def worked(self) -> None:
        if self._said is not None:
            self._said = None
            self._log.warning("%s: the database works again", self._what)


def idle_seconds(poll: float, paused_until: datetime | None, now: datetime) -> float:
    """How long a worker paused by Discord waits: until its next poll, or until the pause
    ends when that comes first (what it left is due then)."""
    if paused_until is None:
        return poll
    return min(poll, max((paused_until - now).total_seconds(), 0.05))


class QueueWorker(ABC):
    name = "queue"  # for task names and log lines

    def __init__(
        self,
        *,
        poll_seconds: float,
        log: logging.Logger,
        min_gap_seconds: float = 0.25,
        stop_seconds: float = 10.0,
        finish_seconds: float = 0.0,
    ) -> None:
        """``min_gap_seconds``: a wake-up starts a pass no sooner than this after the last
        one began: a stream of commits that queue work (or of NOTIFYs from other instances)
        makes one pass per gap rather than one each, each pass taking SQLite's write lock. A
        pass that found work goes on at once. ``stop_seconds``: how long ``stop`` lets the
        call under way finish (then again, at most, for letting go of what was claimed).
        ``finish_seconds``: how long a step of the pass that a cut-off does not split (see
        ``domain.use_cases._uncut``) may still take after it, waited for on top of that:
        the process closes the database once ``stop`` returns."""
        self._poll = poll_seconds
        self._min_gap = min_gap_seconds
        self._stop_seconds = stop_seconds
        self._finish_seconds = finish_seconds
        self._log = log
        self._wake = asyncio.Event()
        self._waiting = False
        self._passing = False
        self._stopping = Stopping()
        self._tasks: list[asyncio.Task[None]] = []

    @abstractmethod
    async def pass_once(self) -> bool:
        """One pass over what is due; ``True`` when it did something (there may be more).
        Never raises: a broken pass is logged, the next retries. It hands ``stopping`` to
        its use case, which starts nothing more once the process stops."""

    @property
    def stopping(self) -> Stopping:
        """Asked when the process stops (``stop``)."""
        return self._stopping

    def idle_seconds(self) -> float:
        """How long to wait for a wake-up after a pass that found nothing to do."""
        return self._poll

    @abstractmethod
    def listener(self) -> QueueListener:
        """What tells this worker about work other processes queued."""

    def start(self) -> None:
        if not self._tasks:
            self._stopping = Stopping()  # a worker stopped before may be started again
            # The listener first: it subscribes to this process's bell before the first pass
            # looks at the queue (tasks start in order), so nothing committed between is missed.
            self._tasks = [
                asyncio.create_task(self._listen(), name=f"taskflow-link {self.name} listener"),
                asyncio.create_task(self._run(), name=f"taskflow-link {self.name} worker"),
            ]

    def wake(self) -> None:
        """Look at the queue now (something was probably just queued)."""
        self._wake.set()

    @property
    def idle(self) -> bool:
        """Waiting for a wake-up or the next poll, with none pending."""
        return self._waiting and not self._wake.is_set()

    async def stop(self, *, grace: float | None = None) -> None:
        """Stop (see the module's doc): at once when waiting; otherwise once the pass under
        way has finished its call and let go of the rest of what it claimed, or has been
        cut off after ``grace`` (``stop_seconds`` unless given) and let go of all of it.
        Bounded: a pass that cannot let go either (a database that does not answer) is
        left behind after ``stop_seconds`` more (and ``finish_seconds``, for a step the
        cut-off does not split), and its rows wait out their lease."""
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        grace = self._stop_seconds if grace is None else grace
        self._stopping.ask()
        listener, runner = tasks
        listener.cancel()
        if not self._passing:
            runner.cancel()  # waiting: it holds nothing
        self._wake.set()  # and a pass that just ended looks no further
        _, late = await asyncio.wait({runner}, timeout=grace)
        if late:
            self._log.warning(
                "%s worker: the call under way did not finish within %s s of the stop; cut "
                "off%s, its row is let go for another instance (it may go twice)",
                self.name,
                grace,
                # A Linked Roles refresh is not cut off: it finishes and its answer is stored.
                " once the step that must finish has (its answer is kept)"
                if self._finish_seconds
                else "",
            )
            runner.cancel()
            # Letting go of the rows, after the step under way that the cut-off does not
            # split (a refresh's answer, stored): the database is closed once this returns.
            last = self._stop_seconds + self._finish_seconds
            _, late = await asyncio.wait({runner}, timeout=last)
            if late:
                self._log.warning(
                    "%s worker: could not let go of what it claimed within %s s; those rows "
                    "wait out their lease",
                    self.name,
                    last,
                )
                runner.cancel()  # left behind: not waited for any more
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        if runner.done():
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.asked:
            self._wake.clear()
            began = loop.time()
            self._passing = True
            try:
                busy = await self.pass_once()
            finally:
                self._passing = False
            if self._stopping.asked:
                return
            if busy:
                continue  # there may be more than one batch
            self._waiting = True
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the wake-up
                # when the task is cancelled in the turn it arrives, losing the cancellation,
                # and stop() then waited for a worker that went on polling.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.idle_seconds()):
                        await self._wake.wait()
            finally:
                self._waiting = False
            if (rest := began + self._min_gap - loop.time()) > 0:
                await asyncio.sleep(rest)  # wake-ups meanwhile make one pass

    async def _listen(self) -> None:
        """Wake-ups from other instances. The listener survives outages itself; should it
        stop all the same, the worker goes on polling."""
        try:
            await self.listener().listen(self.wake)
        except Exception:
            self._log.exception("%s listener stopped; polling every %s s", self.name, self._poll)


async def stop_together(*stops: Awaitable[None]) -> None:
    """Await several stops side by side (workers, the commands under way): each one's grace
    runs at the same time as the others', not after them. Each runs to its end; the first
    error, if any, is raised then."""
    outcomes = await asyncio.gather(*stops, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


def role_workers(container: Container) -> list[QueueWorker]:
    """The role workers a serving process runs: the role for linked members' when one is
    configured (as ``RoleWorker.wanted`` says), Linked Roles' when it is on. Their modules load only
    then: a process without either never uses them."""
    settings = container.settings()
    workers: list[QueueWorker] = []
    if settings.linked_roles:
        from entrypoints.role_worker import RoleWorker  # noqa: PLC0415

        workers.append(RoleWorker(container))
    if settings.discord_role_connections:
        from entrypoints.role_connection_worker import RoleConnectionWorker  # noqa: PLC0415

        workers.append(RoleConnectionWorker(container))
    return workers
