"""SQLAlchemy's asyncio connection pool, first come first served.

SQLAlchemy's ``AsyncAdaptedQueuePool`` keeps free connections in an ``asyncio.Queue`` and
takes one that is there without waiting, even while other requests wait: a request woken for
a returned connection can find it taken by one that has just arrived, and goes back to the end
of the line. Under load (64 ``/link`` at once on 20 connections) most waits were about 150 ms
and a few close to a second, the slowest answers. Here a returned connection goes straight to
the request that has waited longest, and a request finding others waiting waits behind them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TypeVar

from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.util.concurrency import await_
from sqlalchemy.util.queue import Empty, Full, QueueCommon

T = TypeVar("T")


class FairQueue(QueueCommon[T]):
    """The queue ``QueuePool`` expects (``get``/``put`` may wait, inside SQLAlchemy's greenlet),
    handing each returned item to the oldest waiter."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        self.maxsize = maxsize
        self.use_lifo = use_lifo
        self._items: deque[T] = deque()
        self._waiters: deque[asyncio.Future[T]] = deque()

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._items)

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item: T) -> None:
        if self._hand_over(item):
            return
        if self.full():
            raise Full()
        self._items.append(item)

    def _hand_over(self, item: T) -> bool:
        """``item`` to the longest-waiting live waiter, if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done() and not waiter.get_loop().is_closed():
                waiter.set_result(item)
                return True
        return False

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        # The pool returns connections without blocking; an extra one it closes (Full).
        self.put_nowait(item)

    def get_nowait(self) -> T:
        if not self._items:
            raise Empty()
        return self._items.pop() if self.use_lifo else self._items.popleft()

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        if self._items or not block:
            return self.get_nowait()  # nobody waits while an item is there
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await_(self._wait(waiter, within=timeout))
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    async def _wait(self, waiter: asyncio.Future[T], *, within: float | None) -> T:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # comes with the hand-over, and on 3.12 drop an item handed over as the time runs out.
        try:
            async with asyncio.timeout(within):
                return await waiter
        except TimeoutError as exc:
            if waiter.done() and not waiter.cancelled():
                return waiter.result()  # handed over just as the time ran out: taken
            raise Empty() from exc
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Handed over, but this request is cancelled: the connection goes to the next
                # one waiting, else back among the free ones (beyond the pool's size if need
                # be: the pool closes an extra one when it comes back).
                item = waiter.result()
                if not self._hand_over(item):
                    self._items.append(item)
            raise


class FairAsyncAdaptedQueuePool(AsyncAdaptedQueuePool):
    """``AsyncAdaptedQueuePool`` on a ``FairQueue``."""

    _queue_class: type[QueueCommon[ConnectionPoolEntry]] = FairQueue
    # Its logger among SQLAlchemy's pools' (warnings only, unless echo_pool): named after
    # this module, it logged "Pool disposed ... Pool recreating" at every shutdown.
    _sqla_logger_namespace = "sqlalchemy.pool.impl.FairAsyncAdaptedQueuePool"
