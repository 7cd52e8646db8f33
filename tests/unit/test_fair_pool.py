"""The SQL connection pool's queue: first come first served (``adapters.sql.fair_pool``). The
pool calls it from SQLAlchemy's greenlet, as ``greenlet_spawn`` does here."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.util.concurrency import greenlet_spawn
from sqlalchemy.util.queue import Empty, Full

from adapters.sql.fair_pool import FairQueue


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_returned_connection_goes_to_the_longest_waiting_not_to_a_newcomer() -> None:
    queue: FairQueue[str] = FairQueue(maxsize=3)
    got: list[tuple[str, str]] = []
    go = asyncio.Event()

    async def take(name: str, *, after: asyncio.Event | None = None) -> None:
        if after is not None:
            await after.wait()
        got.append((name, await greenlet_spawn(queue.get, True, 30.0)))

    first = asyncio.ensure_future(take("first"))
    second = asyncio.ensure_future(take("second"))
    newcomer = asyncio.ensure_future(take("newcomer", after=go))
    await _settle()
    # The newcomer asks in the very instant a connection comes back, before the waiting
    # ones have run again: SQLAlchemy's own queue let it take that connection.
    go.set()
    queue.put_nowait("a")
    await _settle()
    queue.put_nowait("b")
    await _settle()
    queue.put_nowait("c")
    await asyncio.gather(first, second, newcomer)
    assert got == [("first", "a"), ("second", "b"), ("newcomer", "c")]
    assert queue.empty()


async def test_a_connection_handed_to_a_request_cancelled_meanwhile_goes_to_the_next() -> None:
    queue: FairQueue[str] = FairQueue(maxsize=3)
    got: list[str] = []

    async def take() -> None:
        got.append(await greenlet_spawn(queue.get, True, None))

    leaving = asyncio.ensure_future(take())
    staying = asyncio.ensure_future(take())
    await _settle()
    queue.put_nowait("a")  # handed to the first...
    leaving.cancel()  # ...which is cancelled before it runs again
    await _settle()
    await staying
    assert got == ["a"]
    assert leaving.cancelled()
    assert queue.empty()  # not lost, not kept: in use by the second


async def test_an_item_there_is_taken_at_once_and_a_wait_gives_up_after_its_timeout() -> None:
    queue: FairQueue[str] = FairQueue(maxsize=1)
    queue.put_nowait("a")
    with pytest.raises(Full):
        queue.put_nowait("b")  # the pool closes a connection it cannot keep
    assert await greenlet_spawn(queue.get, True, 30.0) == "a"
    with pytest.raises(Empty):
        queue.get_nowait()
    with pytest.raises(Empty):
        await greenlet_spawn(queue.get, True, 0.01)
    queue.put_nowait("b")  # no waiter left behind by the timeout: kept
    assert queue.qsize() == 1


async def test_last_in_first_out_when_the_pool_asks_for_it() -> None:
    queue: FairQueue[str] = FairQueue(maxsize=3, use_lifo=True)
    for item in "abc":
        queue.put_nowait(item)
    assert [queue.get_nowait() for _ in range(3)] == ["c", "b", "a"]
