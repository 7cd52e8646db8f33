"""A serving process that stops (SIGTERM, Ctrl-C, a rolling deploy) while a queue worker is in
a pass, for every queue (email, webhooks, the role for linked members, Linked Roles), on the
in-memory adapters: the worker's batch is claimed, its first row's outside call (SMTP, a
webhook receiver, Discord) is under way.

Before, the worker's task was cancelled: the call was cut off, and the batch (the row under
way and the rows never started) stayed under its lease, two to five minutes, before another
instance could take it, though nobody was working on it. Now the call under way may finish
(its outcome written back as any other: nothing sent twice), and the rows never started are
let go at once; a call that outlasts the worker's grace is cut off and its row let go too.
(``tests/integration/test_queue_stops_postgres.py``: another instance then takes them.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import pytest
from litestar.testing import AsyncTestClient

from adapters.memory import MemoryDatabase
from domain import errors
from domain.model import DiscordId, RoleAction, RoleChange
from domain.ports import UnitOfWork
from domain.use_cases._claims import Claims
from entrypoints.container import build_container
from entrypoints.queue_worker import QueueWorker
from entrypoints.web import create_app
from tests.harness import Harness, make_settings
from tests.queue_stops import (
    NOT_DONE_AND_FREE,
    QUEUES,
    ROLE,
    ROWS,
    EmailQueue,
    Gate,
    QueueKind,
    stopped_during_the_first_call,
)


@dataclass
class Queue:
    kind: QueueKind
    h: Harness
    worker: QueueWorker


@pytest.fixture(params=list(QUEUES))
async def queue(request: pytest.FixtureRequest) -> AsyncIterator[Queue]:
    kind = QUEUES[request.param](Gate())
    h = kind.instance()
    await kind.fill(h)
    found = Queue(kind, h, kind.worker(h))
    assert await kind.rows(h) == [NOT_DONE_AND_FREE] * len(await kind.rows(h))
    yield found
    kind.gate.opened.set()
    await found.worker.stop()
    h.container.unwire()


async def test_a_stop_lets_the_call_under_way_finish_and_lets_go_of_the_rest_at_once(
    queue: Queue,
) -> None:
    await stopped_during_the_first_call(queue.kind, queue.worker)
    found = await queue.kind.rows(queue.h)
    assert queue.kind.gate.calls == 1  # nothing started after the stop
    assert [row.done for row in found].count(True) == 1  # the call under way: written back
    # The rest: none left under a lease, each due at once for another instance, no try
    # counted.
    assert [row for row in found if not row.done] == [NOT_DONE_AND_FREE] * (len(found) - 1)


async def test_a_call_that_outlasts_the_grace_is_cut_off_and_its_row_let_go_too(
    queue: Queue,
) -> None:
    """At least once: the cut-off call may have reached its receiver, and goes again. Waiting
    out its lease would not spare that (it goes again after the lease all the same); it
    would only delay it, and the rows behind it."""
    await stopped_during_the_first_call(queue.kind, queue.worker, cut_off=True)
    assert queue.kind.gate.calls == 1
    found = await queue.kind.rows(queue.h)
    assert found == [NOT_DONE_AND_FREE] * len(found)


async def test_rows_let_go_at_a_stop_wake_the_other_workers(queue: Queue) -> None:
    """Another instance hears of them at once (on Postgres, by NOTIFY; here, through the
    bell its units of work ring), rather than at its next poll."""
    database: MemoryDatabase = queue.h.container.memory_db()
    heard: list[str] = []
    channel = queue.kind.channel
    stop_listening = database.bell.subscribe(channel, lambda: heard.append(channel))
    try:
        await stopped_during_the_first_call(queue.kind, queue.worker, cut_off=True)
        for _ in range(5):  # the wake-ups are scheduled on this loop
            await asyncio.sleep(0)
    finally:
        stop_listening()
    assert heard


async def test_a_pass_that_breaks_lets_go_of_what_it_never_started() -> None:
    """A row whose pass raises (a bug, a value the code cannot take) stays under its lease,
    its back-off: tried again at once, it would break every pass. The rows of its batch it
    never started are not held with it: before, they waited out the lease too (a poison row
    held up to 19 others, at each try)."""
    h = Harness.build(
        build_container(make_settings(discord_linked_roles=str(ROLE), discord_bot_token="t"))
    )
    for n in range(3):
        now = h.clock.now()
        async with h.uow() as uow:
            await uow.role_changes.request(
                RoleChange(DiscordId(900 + n), ROLE, RoleAction.REMOVE, now, now)
            )
            await uow.commit()

    async def breaks() -> None:
        raise RuntimeError("a bug")

    h.guild_roles.during_next_call = breaks
    with pytest.raises(RuntimeError):
        await h.container.apply_role_changes().execute()
    now = h.clock.now()
    database: MemoryDatabase = h.container.memory_db()
    held = [
        c.claimed_until is not None and c.claimed_until > now
        for c in database.tables.role_changes.values()
    ]
    assert held == [True, False, False]


async def test_the_web_apps_shutdown_lets_go_of_what_its_workers_claimed() -> None:
    """The same through the app: its lifespan's end (uvicorn's, at SIGTERM) stops its workers
    this way. The email under way outlasts the grace (``TASKFLOW_LINK_SHUTDOWN_TIMEOUT_SECONDS``,
    short here): cut off, it is let go with the rest, and nothing is left under a lease."""
    kind = EmailQueue(Gate(), shutdown_timeout_seconds=0.5)
    h = kind.instance()
    await kind.fill(h)
    async with AsyncTestClient(app=create_app(h.container)):
        await asyncio.wait_for(kind.gate.entered.wait(), 60)  # a bound, not a measurement
        assert [row.leased for row in await kind.rows(h)] == [True] * ROWS
    found = await kind.rows(h)
    assert found == [NOT_DONE_AND_FREE] * ROWS
    assert kind.gate.calls == 1
    h.container.unwire()


async def test_a_stopped_worker_started_again_works_its_queue() -> None:
    kind = EmailQueue(Gate())
    h = kind.instance()
    worker = kind.worker(h)
    worker.start()
    await worker.stop()
    kind.gate.opened.set()
    await kind.fill(h)
    worker.start()
    try:
        for _ in range(10_000):  # a bound, not a deadline: each turn is one of the loop's
            if all(row.done for row in await kind.rows(h)):
                break
            await asyncio.sleep(0)
        assert [row.done for row in await kind.rows(h)] == [True] * ROWS
    finally:
        await worker.stop()
        h.container.unwire()


async def test_a_cut_off_pass_stays_cut_off_when_letting_go_fails() -> None:
    """Cut off (cancelled) while the database cannot take the letting go either: the rows wait
    out their lease, and the cut-off stands. The letting go's error took its place: a worker
    at its stop logged the database "unreachable; will retry", and a command's Ctrl-C (or a
    timeout around the pass) was reported as a database outage."""
    h = Harness.build(build_container(make_settings()))
    tried: list[str] = []

    async def release(_uow: UnitOfWork, row: str, _now: datetime) -> bool:
        tried.append(row)
        raise errors.StorageError()

    entered = asyncio.Event()

    async def a_pass() -> None:
        async with Claims(h.container.uow(), h.clock, release) as claims:
            claims.took(["under way", "never started"])
            for _row in claims:
                entered.set()
                await asyncio.Event().wait()  # the call under way, cut off

    task = asyncio.create_task(a_pass())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert tried == ["under way"]  # tried, in one transaction that the error ended
    h.container.unwire()
