from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from adapters.memory import MemoryDatabase
from adapters.queue_listener import QueueBell
from domain.ports import UnitOfWorkFactory
from tests.contracts.repositories import RepositoryContract


class TestMemoryRepositories(RepositoryContract):
    @pytest.fixture
    def db(self) -> MemoryDatabase:
        return MemoryDatabase()

    @pytest.fixture
    def uow_factory(self, db: MemoryDatabase) -> UnitOfWorkFactory:
        return db.unit_of_work

    @pytest.fixture
    def bell(self, db: MemoryDatabase) -> QueueBell:
        return db.bell


# A bound on waiting (never reached when the lock works), so that a broken lock fails the test
# rather than hanging the suite.
_NEVER = 120


def _in_a_thread_of_its_own(coroutine: Callable[[], Coroutine[Any, Any, None]]) -> threading.Thread:
    """Runs ``coroutine`` on a new event loop in a new thread, as Litestar's test client runs
    the app; its loop has nothing else to do (no timer that would wake it by chance)."""
    thread = threading.Thread(target=lambda: asyncio.run(coroutine()), daemon=True)
    thread.start()
    return thread


async def test_the_lock_is_taken_in_turns_by_event_loops_of_different_threads() -> None:
    """The suite hung now and then in web tests: the memory database's asyncio.Lock, released
    by the test's loop, woke a waiter of the app's loop (another thread) without waking that
    loop; and once bound to one loop it refused waiters of another."""
    db = MemoryDatabase()
    events: list[str] = []
    waiting = threading.Event()
    holds = threading.Event()
    done_holding = threading.Event()

    async def other_thread() -> None:
        acquiring = asyncio.ensure_future(db.lock.acquire())
        await asyncio.sleep(0)
        waiting.set()  # the main loop holds it: this one waits
        await acquiring
        events.append("other thread took it")
        holds.set()
        await asyncio.to_thread(done_holding.wait, _NEVER)
        db.lock.release()

    await db.lock.acquire()
    thread = _in_a_thread_of_its_own(other_thread)
    assert await asyncio.to_thread(waiting.wait, _NEVER)
    db.lock.release()
    assert await asyncio.to_thread(holds.wait, _NEVER), "the other thread was never woken"
    assert db.lock.locked()
    # Now this loop waits for the other thread's (an asyncio.Lock bound to the other loop
    # refused this waiter with a RuntimeError).
    mine = asyncio.ensure_future(db.lock.acquire())
    await asyncio.sleep(0)
    assert not mine.done()
    done_holding.set()
    assert await asyncio.wait_for(mine, _NEVER)
    events.append("main loop took it")
    db.lock.release()
    await asyncio.to_thread(thread.join, _NEVER)
    assert events == ["other thread took it", "main loop took it"]
    assert not db.lock.locked()


async def test_a_waiter_that_leaves_passes_its_turn_on() -> None:
    db = MemoryDatabase()
    await db.lock.acquire()
    first = asyncio.ensure_future(db.lock.acquire())
    second = asyncio.ensure_future(db.lock.acquire())
    await asyncio.sleep(0)
    db.lock.release()  # wakes the first...
    first.cancel()  # ...which leaves before it runs
    assert await asyncio.wait_for(second, _NEVER)
    assert first.cancelled()
    db.lock.release()
    assert not db.lock.locked()
