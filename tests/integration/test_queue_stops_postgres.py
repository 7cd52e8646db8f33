"""A rolling deploy on Postgres, for every queue (email, webhooks, the role for linked members,
Linked Roles): instance A's worker has claimed the whole queue and its first call (SMTP, a
webhook receiver, Discord) is under way when A stops; instance B (its own container, engine,
pool and listening connection, as another process) runs a worker that polls once an hour.

Before, B found A's rows only once their lease ran out (two to five minutes, and here not
before its hourly poll): nobody worked on them meanwhile. Now A lets go of what it never
started as it stops, which wakes B (NOTIFY), and B sends it at once: each row once when A's
call finished within its grace, and the row whose call was cut off once more (at least
once: it may have reached its receiver)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from dependency_injector import providers

from adapters.sql import SqlDatabase
from entrypoints.queue_worker import QueueWorker
from tests.bot_support import wait_until
from tests.fakes.queue_listener import CountingListener
from tests.harness import Harness
from tests.integration.postgres import PostgresServer
from tests.queue_stops import (
    QUEUES,
    ROWS,
    Gate,
    QueueKind,
    stopped_during_the_first_call,
)

DEADLINE = 60.0  # seconds: generous, for a busy machine; never a measurement


@dataclass
class Instance:
    h: Harness
    worker: QueueWorker
    listener: CountingListener


@contextlib.asynccontextmanager
async def instances(kind: QueueKind) -> AsyncIterator[tuple[Instance, Instance]]:
    """A and B: B shares A's clock (as servers share the time) and outside world."""
    made: list[Instance] = []
    try:
        for _ in range(2):
            h = kind.instance(like=made[0].h if made else None)
            provider = getattr(h.container, kind.listener)
            listener = CountingListener(provider())
            provider.override(providers.Object(listener))
            made.append(Instance(h, kind.worker(h), listener))
        yield made[0], made[1]
    finally:
        kind.gate.opened.set()
        for instance in made:
            await instance.worker.stop()
            await instance.h.container.sql_db().dispose()
            instance.h.container.unwire()


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE  # a bound, not a measurement
    while not await check():
        assert loop.time() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("cut_off", [False, True], ids=["call finished", "call cut off"])
@pytest.mark.parametrize("name", list(QUEUES))
async def test_another_instance_takes_at_once_what_a_stopping_one_let_go(
    postgres: PostgresServer, pg_db: SqlDatabase, name: str, cut_off: bool
) -> None:
    kind = QUEUES[name](Gate(), storage="sql", database_url=postgres.url)
    async with instances(kind) as (a, b):
        await kind.fill(a.h)
        a.worker.start()
        await wait_until(kind.gate.entered.is_set, DEADLINE)  # A claimed the queue
        b.worker.start()
        # B listens, and its first pass (at start, and at its listener's wake-up) found
        # every row under A's lease: only a NOTIFY makes it look again within the hour.
        await wait_until(lambda: b.listener.wakes >= 1 and b.worker.idle, DEADLINE)
        assert [row.leased for row in await kind.rows(a.h)] == [True] * ROWS

        await stopped_during_the_first_call(kind, a.worker, cut_off=cut_off)

        async def all_done() -> bool:
            return all(row.done for row in await kind.rows(b.h))

        await eventually(all_done)
        # Each row once; the one whose call was cut off once more (by B).
        assert kind.gate.calls == ROWS + cut_off
        assert [row.tries <= 1 for row in await kind.rows(b.h)] == [True] * ROWS
