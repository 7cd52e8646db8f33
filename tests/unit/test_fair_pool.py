"""The SQL connection pool's queue: first come first served (``adapters.sql.fair_pool``). The
pool calls it from SQLAlchemy's greenlet, as ``greenlet_spawn`` does here."""

from __future__ import annotations

import asyncio
import logging

import pytest
from sqlalchemy.util.concurrency import greenlet_spawn
from sqlalchemy.util.queue import Empty, Full

from adapters.sql import SqlDatabase
from adapters.sql.fair_pool import FairAsyncAdaptedQueuePool, FairQueue


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


@pytest.mark.parametrize("wait_up_to", [None, 30.0])
async def test_a_connection_handed_to_a_request_cancelled_meanwhile_goes_to_the_next(
    wait_up_to: float | None,
) -> None:
    """And the request is cancelled (Python 3.11's wait_for returned the connection instead,
    ignoring the cancellation)."""
    queue: FairQueue[str] = FairQueue(maxsize=3)
    got: list[str] = []

    async def take() -> None:
        got.append(await greenlet_spawn(queue.get, True, wait_up_to))

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


async def test_a_handed_over_connection_is_kept_when_nobody_else_waits_even_beyond_the_size() -> (
    None
):
    """The pool closes an extra connection when it comes back; losing one would leave it
    counted as in use for good."""
    queue: FairQueue[str] = FairQueue(maxsize=1)
    leaving = asyncio.ensure_future(greenlet_spawn(queue.get, True, 30.0))
    await _settle()
    queue.put_nowait("a")
    leaving.cancel()
    queue_full_meanwhile = "b"
    queue.put_nowait(queue_full_meanwhile)
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert sorted([queue.get_nowait(), queue.get_nowait()]) == ["a", "b"]


async def test_a_connection_handed_over_as_the_wait_times_out_is_taken() -> None:
    queue: FairQueue[str] = FairQueue(maxsize=1)
    taking = asyncio.ensure_future(greenlet_spawn(queue.get, True, 0.0))
    await asyncio.sleep(0)  # waiting, its deadline already due
    queue.put_nowait("a")
    assert await taking == "a"
    assert queue.empty()


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


async def test_the_pool_logs_as_sqlalchemys_pools_do_quiet_below_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its records were named after this module, outside SQLAlchemy's ``sqlalchemy`` logger
    (which logs warnings only, unless ``echo_pool``), so every `serve` and `bot` on Postgres
    logged at its shutdown "Pool disposed. Pool size: 10 ... Current Overflow: -10" and
    "Pool recreating" at INFO, in the operator's terminal. (Disposing connects to nothing.)"""
    database = SqlDatabase("postgresql+asyncpg://taskflow@127.0.0.1:1/taskflow")
    assert isinstance(database.engine.pool, FairAsyncAdaptedQueuePool)
    with caplog.at_level(logging.INFO):
        await database.dispose()
    assert [r.getMessage() for r in caplog.records if "Pool" in r.getMessage()] == []
