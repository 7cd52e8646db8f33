"""The loop of a background queue worker (the email queue, the Discord role queue) in a serving
process (the web app, the gateway bot). Several processes may run one each: each pass claims
a batch no other worker gets.

A worker looks at its queue when it starts, whenever it is woken, and every ``poll_seconds``.
Its ``QueueListener`` wakes it when its own process commits work for it (the bell), and, on
Postgres, when any instance does (LISTEN/NOTIFY): work queued anywhere is done at once, and the
poll is only the safety net."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from datetime import datetime

from domain import errors
from domain.ports import QueueListener


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
                "%s unreachable (database); will retry (said once until it works)", self._what
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
        self, *, poll_seconds: float, log: logging.Logger, min_gap_seconds: float = 0.25
    ) -> None:
        """``min_gap_seconds``: a wake-up starts a pass no sooner than this after the last
        one began: a stream of commits that queue work (or of NOTIFYs from other instances)
        makes one pass per gap rather than one each, each pass taking SQLite's write lock. A
        pass that found work goes on at once."""
        self._poll = poll_seconds
        self._min_gap = min_gap_seconds
        self._log = log
        self._wake = asyncio.Event()
        self._waiting = False
        self._tasks: list[asyncio.Task[None]] = []

    @abstractmethod
    async def pass_once(self) -> bool:
        """One pass over what is due; ``True`` when it did something (there may be more).
        Never raises: a broken pass is logged, the next retries."""

    def idle_seconds(self) -> float:
        """How long to wait for a wake-up after a pass that found nothing to do."""
        return self._poll

    @abstractmethod
    def listener(self) -> QueueListener:
        """What tells this worker about work other processes queued."""

    def start(self) -> None:
        if not self._tasks:
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

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            began = loop.time()
            if await self.pass_once():
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
