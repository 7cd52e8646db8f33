"""The purge on real Postgres (and on SQLite where said): one purge batch at a time across
processes (the advisory lock each batch takes), a background purge that finds another one
under way skips, the command waits for the batch under way; batches of ``batch`` rows, each
its own transaction."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

from adapters.sql import SqlDatabase
from adapters.sql.tables import pending_login, sessions, webhook_events
from adapters.sql.uow import SqlUnitOfWork
from domain.model import Session
from domain.ports import UnitOfWork
from domain.use_cases import NO_WEBHOOKS, PurgeEnd, PurgeExpired
from domain.use_cases.discord_auth import KEPT_PAST_EXPIRY
from domain.webhooks import WebhookState
from tests.contracts.repositories import HOOK_A, HOOK_B, NOW, account, pending, webhook, write
from tests.fakes.clock import ManualClock
from tests.harness import TEST_SECRET_KEY
from tests.integration.postgres import PostgresServer

DEADLINE = 60.0  # seconds: generous, for a busy machine; never a measurement


async def _expired(pg_db: SqlDatabase, *, logins: int, sessions_: int) -> None:
    owner = account()
    async with pg_db.unit_of_work() as uow:
        await uow.accounts.add(owner)
        for n in range(logins):
            await uow.pending_logins.add(pending(f"p{n:063d}", expires_at=NOW))
        for n in range(sessions_):
            await uow.sessions.add(Session(f"s{n:063d}", owner.id, NOW, NOW))
        await uow.commit()


async def _count(pg_db: SqlDatabase, table: Any) -> int:
    async with pg_db.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def _waiting_for_the_purge_lock(pg_db: SqlDatabase, task: asyncio.Task[Any]) -> None:
    """Until ``task`` waits for an advisory lock in this database (or has finished: then the
    assertions after say whether it should have)."""
    deadline = time.monotonic() + DEADLINE
    query = text(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND NOT l.granted AND a.datname = current_database()"
    )
    while not task.done():
        async with pg_db.engine.connect() as conn:
            if (await conn.execute(query)).scalar_one():
                return
        assert time.monotonic() < deadline, "the purge neither waited nor finished"
        await asyncio.sleep(0.02)


async def test_a_purge_that_finds_another_ones_batch_under_way_skips_and_the_command_waits(
    pg_db: SqlDatabase,
) -> None:
    await _expired(pg_db, logins=3, sessions_=2)
    clock = ManualClock(NOW + KEPT_PAST_EXPIRY + timedelta(minutes=1))
    async with pg_db.unit_of_work() as holder:  # another purge's batch, under way
        assert await holder.maintenance.take_purge_turn(wait=False)

        background = PurgeExpired(pg_db.unit_of_work, clock, NO_WEBHOOKS)
        skipped = await background.execute(wait=False)
        assert (skipped.ended, skipped.deleted) == (PurgeEnd.ANOTHER, 0)
        assert await _count(pg_db, pending_login) == 3

        command = asyncio.create_task(
            PurgeExpired(pg_db.unit_of_work, clock, NO_WEBHOOKS).execute()
        )
        await _waiting_for_the_purge_lock(pg_db, command)
        assert not command.done(), "the command did not wait for the batch under way"
        await holder.commit()  # the other batch ends: the command goes on
    done = await command
    assert (done.ended, done.pending_logins, done.sessions) == (PurgeEnd.DONE, 3, 2)
    assert await _count(pg_db, pending_login) == 0


async def test_purge_expired_waits_for_a_batch_that_outlasts_its_statement_timeout(
    pg_db: SqlDatabase, postgres: PostgresServer, tmp_path: Any
) -> None:
    """`taskflow-link purge-expired` while a serving process's purge holds the purge's turn
    longer than the command's statement timeout (a big batch, a slow disk): the command's wait
    for the advisory lock was one statement, cut off by the server at
    TASKFLOW_LINK_DB_STATEMENT_TIMEOUT_SECONDS, and the command failed with "Cannot use the
    database …: canceling statement due to statement timeout", as if the database were
    broken. It says that another purge is under way, waits its turn, then purges."""
    await _expired(pg_db, logins=3, sessions_=2)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "TASKFLOW_LINK_SECRET_KEY": TEST_SECRET_KEY,
        "TASKFLOW_LINK_DATABASE_URL": postgres.url,
        "TASKFLOW_LINK_DB_STATEMENT_TIMEOUT_SECONDS": "0.5",
    }
    async with pg_db.unit_of_work() as holder:  # a serving process's batch, under way
        assert await holder.maintenance.take_purge_turn(wait=False)
        command = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "entrypoints",
            "purge-expired",
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        waited = asyncio.create_task(command.wait())
        await _waiting_for_the_purge_lock(pg_db, waited)
        # Past the command's statement timeout (0.5 s) and its client's own deadline (1 s
        # later): the batch under way takes as long as it takes.
        await asyncio.sleep(2.5)
        await holder.commit()
    async with asyncio.timeout(DEADLINE):
        out, err = await command.communicate()
    said = out.decode() + err.decode()
    assert command.returncode == 0, said
    assert "Traceback" not in said
    assert "Another purge" in err.decode()
    assert "Purged 3 pending login(s), 0 ticket(s), 2 session(s)" in out.decode()
    assert await _count(pg_db, pending_login) == 0


async def test_a_turn_waited_for_in_steps_leaves_the_batch_its_lock_timeout(
    pg_db: SqlDatabase, postgres: PostgresServer
) -> None:
    """The waits shorter than the statement timeout set ``lock_timeout`` for themselves: the
    batch that then runs waits for rows as every other statement of the service does."""
    timed = SqlDatabase(postgres.url, statement_timeout=0.5)
    try:

        async def batch() -> str:
            async with timed.unit_of_work() as uow:
                assert await uow.maintenance.take_purge_turn(wait=True)
                shown = await uow._session.execute(text("SHOW lock_timeout"))
                return str(shown.scalar_one())

        async with pg_db.unit_of_work() as holder:
            assert await holder.maintenance.take_purge_turn(wait=False)
            waiting = asyncio.create_task(batch())
            await _waiting_for_the_purge_lock(pg_db, waiting)
            await asyncio.sleep(1.5)  # several waits, each cut off by its lock_timeout
            assert not waiting.done()
            await holder.commit()
        async with asyncio.timeout(DEADLINE):
            assert await waiting == "0"
    finally:
        await timed.dispose()


class _Watched:
    """A purge's unit of work on the real one, that counts the batches holding the purge's
    turn at any moment (``Batches``). The first batch to get the turn holds it until the
    other purge has tried too, so that the two surely meet."""

    def __init__(self, real: SqlUnitOfWork, batches: _Batches) -> None:
        self._real, self._batches, self._held = real, batches, False
        self.maintenance = self

    async def take_purge_turn(self, *, wait: bool) -> bool:
        taken = await self._real.maintenance.take_purge_turn(wait=wait)
        self._batches.tries += 1
        if self._batches.tries >= 2:
            self._batches.both_tried.set()
        if taken:
            self._held = True
            self._batches.active += 1
            self._batches.most = max(self._batches.most, self._batches.active)
            async with asyncio.timeout(DEADLINE):
                await self._batches.both_tried.wait()
        return taken

    async def commit(self) -> None:
        self._let_go()  # before the commit: the turn is let go with it
        await self._real.commit()

    def _let_go(self) -> None:
        if self._held:
            self._held = False
            self._batches.active -= 1

    async def __aenter__(self) -> _Watched:
        await self._real.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._let_go()
        await self._real.__aexit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _Batches:
    def __init__(self) -> None:
        self.tries = self.active = self.most = 0
        self.both_tried = asyncio.Event()


async def test_two_purges_at_once_one_runs_the_other_skips(pg_db: SqlDatabase) -> None:
    """Two instances' purges started together: one runs to the end, the other skips, and no
    two batches ever hold the turn at once. Every expired row goes, once."""
    await _expired(pg_db, logins=30, sessions_=25)
    clock = ManualClock(NOW + KEPT_PAST_EXPIRY + timedelta(minutes=1))
    batches = _Batches()

    def factory(*, read_only: bool = False) -> Any:
        return _Watched(pg_db.unit_of_work(read_only=read_only), batches)

    one, two = await asyncio.gather(
        PurgeExpired(factory, clock, NO_WEBHOOKS, batch=4).execute(wait=False),
        PurgeExpired(factory, clock, NO_WEBHOOKS, batch=4).execute(wait=False),
    )

    assert batches.most == 1, "two purge batches held the turn at once"
    ran, skipped = (one, two) if one.ended is PurgeEnd.DONE else (two, one)
    assert (ran.ended, ran.pending_logins, ran.sessions) == (PurgeEnd.DONE, 30, 25)
    assert (skipped.ended, skipped.deleted, skipped.batches) == (PurgeEnd.ANOTHER, 0, 0)
    assert (await _count(pg_db, pending_login), await _count(pg_db, sessions)) == (0, 0)


async def test_a_purge_on_postgres_deletes_in_batches(pg_db: SqlDatabase) -> None:
    await _expired(pg_db, logins=9, sessions_=0)
    # Past the time a Discord round trip is kept after its expiry.
    clock = ManualClock(NOW + KEPT_PAST_EXPIRY + timedelta(minutes=1))
    before = ManualClock(NOW - timedelta(days=1))  # nothing expired yet: a batch per table
    empty = await PurgeExpired(pg_db.unit_of_work, before, NO_WEBHOOKS, batch=4).execute()
    report = await PurgeExpired(pg_db.unit_of_work, clock, NO_WEBHOOKS, batch=4).execute()
    assert (report.ended, report.pending_logins) == (PurgeEnd.DONE, 9)
    assert report.batches == empty.batches + 2  # 4, 4, then 1


@pytest.fixture(params=["sqlite_db", "pg_db"])
def database(request: pytest.FixtureRequest) -> SqlDatabase:
    found: SqlDatabase = request.getfixturevalue(request.param)
    return found


async def test_each_batch_deletes_the_events_its_deliveries_leave_unnamed(
    database: SqlDatabase,
) -> None:
    """An event goes with its last delivery, in the batch that deleted it (the batch looks
    only at the events of what it deleted, not the whole table)."""
    finished = NOW - timedelta(days=31)
    queued = [webhook(NOW - timedelta(days=40), HOOK_A, HOOK_B) for _ in range(3)]

    async def add_all(uow: UnitOfWork) -> None:
        for event, deliveries in queued:
            done = [
                replace(d, state=WebhookState.DELIVERED, finished_at=finished) for d in deliveries
            ]
            await uow.webhooks.add(event, done)

    await write(database.unit_of_work, add_all)
    unnamed = text(
        "SELECT count(*) FROM webhook_events e WHERE NOT EXISTS "
        "(SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id)"
    )
    deleted = []
    for _ in range(4):
        async with database.unit_of_work() as uow:
            deleted.append(await uow.webhooks.purge_finished(NOW - timedelta(days=30), None, 4))
            await uow.commit()
        async with database.engine.connect() as conn:
            assert (await conn.execute(unnamed)).scalar_one() == 0
    assert deleted == [4, 2, 0, 0]
    assert await _count(database, webhook_events) == 0
