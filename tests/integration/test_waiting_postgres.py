"""``until_it_waits_for_a_lock`` waits for the given task's own transaction: another one's
wait for a lock (another task's, in the same test) does not end it early."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from adapters.sql import SqlDatabase
from tests.integration.waiting import POLL_SECONDS, until_it_waits_for_a_lock

LOCK = text("SELECT pg_advisory_xact_lock(253)")


async def _locked(database: SqlDatabase, first: asyncio.Event | None = None) -> None:
    """The lock taken, in a transaction of its own (once ``first`` is set)."""
    if first is not None:
        await first.wait()
    async with database.engine.begin() as conn:
        await conn.execute(LOCK)


async def test_another_tasks_wait_for_a_lock_does_not_count(pg_db: SqlDatabase) -> None:
    async with pg_db.engine.connect() as holder:
        transaction = await holder.begin()
        await holder.execute(LOCK)
        other = asyncio.create_task(_locked(pg_db))
        await until_it_waits_for_a_lock(pg_db, other)  # the other task waits now
        assert not other.done()
        start = asyncio.Event()
        own = asyncio.create_task(_locked(pg_db, start))
        wait = asyncio.create_task(until_it_waits_for_a_lock(pg_db, own))
        for _ in range(10):  # several looks: it must not end while its task waits for nothing
            await asyncio.sleep(POLL_SECONDS)
            assert not wait.done(), "the other task's wait counted"
        start.set()
        await wait
        assert not own.done()  # it waits for the lock
        await transaction.rollback()
    await asyncio.gather(other, own)
