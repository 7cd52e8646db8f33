"""The purge in batches (``PurgeExpired``) and in the background of the serving processes
(``PurgeWorker``): no cron job needed for the expired rows to go. The loop is driven by the
test's own ``sleep`` (it waits until told), never by time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from dependency_injector import providers
from litestar.testing import AsyncTestClient

from adapters.memory import MemoryDatabase, MemoryUnitOfWork
from domain import errors
from domain.model import DiscordId, DiscordUser, LinkProposal, Session
from domain.ports import UnitOfWork
from domain.use_cases import NO_WEBHOOKS, PurgeEnd, PurgeExpired, PurgeReport, Stopping
from domain.use_cases._shared import SENT_TWICE_WITHIN
from domain.use_cases.discord_auth import KEPT_PAST_EXPIRY
from entrypoints.container import Container, build_container
from entrypoints.purge_worker import PurgeWorker
from entrypoints.settings import Settings
from entrypoints.web import create_app
from tests.contracts.repositories import account, pending
from tests.fakes.clock import ManualClock
from tests.harness import TEST_SECRET_KEY, make_settings


async def _expired(db: MemoryDatabase, clock: ManualClock, *, logins: int, sessions: int) -> None:
    """Expired pending sign-ins and sessions, as many as asked, and a live one of each."""
    owner = account()
    now = clock.now()
    async with db.unit_of_work() as uow:
        await uow.accounts.add(owner)
        for n in range(logins):
            # A Discord round trip's is kept a while past its expiry (``KEPT_PAST_EXPIRY``).
            await uow.pending_logins.add(pending(f"p{n:063d}", expires_at=now - KEPT_PAST_EXPIRY))
        for n in range(sessions):
            await uow.sessions.add(Session(f"s{n:063d}", owner.id, now, now))
        await uow.pending_logins.add(pending("l" * 64, expires_at=now + timedelta(minutes=5)))
        await uow.sessions.add(Session("l" * 64, owner.id, now, now + timedelta(days=1)))
        await uow.commit()


def _left(db: MemoryDatabase) -> tuple[int, int]:
    return len(db.tables.pending_logins), len(db.tables.sessions)


# -- the use case ---------------------------------------------------------------------------


async def test_a_discord_round_trip_is_kept_a_while_past_its_expiry() -> None:
    """Its callback loaded again while the first load still asks Discord must find the
    state spent (see ``KEPT_PAST_EXPIRY``), not unknown."""
    db, clock = MemoryDatabase(), ManualClock()
    async with db.unit_of_work() as uow:
        await uow.pending_logins.add(pending("k" * 64, expires_at=clock.now()))
        await uow.commit()
    purge = PurgeExpired(db.unit_of_work, clock, NO_WEBHOOKS)
    clock.advance(KEPT_PAST_EXPIRY - timedelta(seconds=1))
    assert (await purge.execute()).pending_logins == 0
    clock.advance(timedelta(seconds=1))
    assert (await purge.execute()).pending_logins == 1


async def test_a_purge_deletes_in_batches_each_its_own_transaction() -> None:
    """A first run after a long gap (or under a cron job nobody set up) deletes in batches
    of ``batch`` rows, each committed on its own: the store's writers get their turn in
    between (on SQLite the one writer lock), instead of waiting out one huge transaction."""
    db, clock = MemoryDatabase(), ManualClock()
    purge = PurgeExpired(db.unit_of_work, clock, NO_WEBHOOKS, batch=2)
    empty = await purge.execute()  # one batch per table, each finding nothing
    await _expired(db, clock, logins=3, sessions=5)
    commits = db.commits

    report = await purge.execute()

    assert (report.pending_logins, report.sessions, report.ended) == (3, 5, PurgeEnd.DONE)
    # 3 rows: 2 then 1; 5 rows: 2, 2 then 1; every other table one batch as before.
    assert report.batches == empty.batches + 1 + 2
    assert db.commits - commits == report.batches
    assert _left(db) == (1, 1)  # the live ones


def _stopping_after_first_commit(db: MemoryDatabase, stopping: Stopping) -> Callable[..., Any]:
    def factory(*, read_only: bool = False) -> MemoryUnitOfWork:
        uow = db.unit_of_work(read_only=read_only)
        commit = uow.commit

        async def commit_then_stop() -> None:
            await commit()
            stopping.ask()  # the process is asked to stop while this batch ran

        uow.commit = commit_then_stop  # type: ignore[method-assign]
        return uow

    return factory


async def test_a_link_proposal_is_kept_the_minute_of_a_form_sent_twice() -> None:
    """A Discord link confirmed (with the password, or the emailed link) just before its
    proposal expired: the form's second request reads the spent proposal to be answered the
    first one's session (``SENT_TWICE_WITHIN``), so the purge keeps it that long."""
    db, clock = MemoryDatabase(), ManualClock()
    owner = account()
    async with db.unit_of_work() as uow:
        await uow.accounts.add(owner)
        await uow.link_proposals.add(
            LinkProposal(
                "k" * 64,
                DiscordUser(DiscordId(42), "dora"),
                owner.id,
                "/account",
                clock.now() - timedelta(minutes=10),
                clock.now(),
                consumed_at=clock.now(),
            )
        )
        await uow.commit()
    purge = PurgeExpired(db.unit_of_work, clock, NO_WEBHOOKS)
    clock.advance(SENT_TWICE_WITHIN - timedelta(seconds=1))
    assert (await purge.execute()).link_proposals == 0
    clock.advance(timedelta(seconds=1))
    assert (await purge.execute()).link_proposals == 1


async def test_a_purge_asked_to_stop_ends_between_two_batches_and_the_next_run_finishes() -> None:
    db, clock = MemoryDatabase(), ManualClock()
    await _expired(db, clock, logins=5, sessions=3)
    stopping = Stopping()
    purge = PurgeExpired(_stopping_after_first_commit(db, stopping), clock, NO_WEBHOOKS, batch=2)

    report = await purge.execute(stopping=stopping)

    assert (report.ended, report.batches, report.pending_logins) == (PurgeEnd.STOPPING, 1, 2)
    assert _left(db) == (4, 4)  # the batch committed whole; nothing else touched
    done = await PurgeExpired(db.unit_of_work, clock, NO_WEBHOOKS, batch=2).execute()
    assert (done.ended, done.pending_logins, done.sessions) == (PurgeEnd.DONE, 3, 3)
    assert _left(db) == (1, 1)


class _TurnTaken:
    """Another purge's batch under way: the turn is refused unless waited for."""

    def __init__(self) -> None:
        self.asked: list[bool] = []

    async def take_purge_turn(self, *, wait: bool) -> bool:
        self.asked.append(wait)
        return wait


async def test_a_purge_that_finds_another_under_way_skips_unless_it_waits() -> None:
    """The serving processes' purge (``wait=False``) leaves the work to a purge already under
    way; ``purge-expired`` (``wait=True``) waits for its batch instead."""
    db, clock = MemoryDatabase(), ManualClock()
    await _expired(db, clock, logins=1, sessions=1)
    turn = _TurnTaken()

    def factory(*, read_only: bool = False) -> UnitOfWork:
        uow = db.unit_of_work(read_only=read_only)
        uow.maintenance = turn  # type: ignore[assignment]
        return uow

    commits = db.commits
    skipped = await PurgeExpired(factory, clock, NO_WEBHOOKS).execute(wait=False)
    assert (skipped.ended, skipped.deleted, skipped.batches) == (PurgeEnd.ANOTHER, 0, 0)
    assert (db.commits, _left(db)) == (commits, (2, 2))

    said: list[str] = []
    waited = await PurgeExpired(factory, clock, NO_WEBHOOKS).execute(
        waiting=lambda: said.append("waiting")
    )
    assert (waited.ended, waited.pending_logins, waited.sessions) == (PurgeEnd.DONE, 1, 1)
    # Each batch asks without waiting first, then waits (saying so once per run).
    assert turn.asked == [False] + [False, True] * ((len(turn.asked) - 1) // 2)
    assert len(turn.asked) > 3
    assert said == ["waiting"]


# -- the worker -----------------------------------------------------------------------------


class _Ticks:
    """The worker's ``sleep``: records how long it was asked to wait, and returns when the
    test says so (``tick``)."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self._go: asyncio.Queue[None] = asyncio.Queue()

    async def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        await self._go.get()

    def tick(self) -> None:
        self._go.put_nowait(None)

    async def waiting(self, times: int) -> None:
        """Until the worker has asked to wait ``times`` times (it is then waiting)."""
        for _ in range(1000):
            if len(self.asked) >= times:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"the worker asked to wait {len(self.asked)} times, not {times}")


def _container(**settings: object) -> tuple[Container, MemoryDatabase, ManualClock]:
    container = build_container(make_settings(**{"purge_interval_seconds": 600, **settings}))
    clock = ManualClock()
    container.clock.override(clock)
    db: MemoryDatabase = container.memory_db()
    return container, db, clock


async def test_the_worker_purges_after_its_first_wait_then_every_interval() -> None:
    container, db, clock = _container()
    await _expired(db, clock, logins=2, sessions=1)
    ticks = _Ticks()
    worker = PurgeWorker(container, first_run_after=45, sleep=ticks.sleep)
    worker.start()
    try:
        await ticks.waiting(1)
        assert _left(db) == (3, 2)  # nothing before the first run
        ticks.tick()
        await ticks.waiting(2)
        assert _left(db) == (1, 1)
        clock.advance(timedelta(days=2))  # the live ones expire meanwhile
        ticks.tick()
        await ticks.waiting(3)
        assert _left(db) == (0, 0)
        assert ticks.asked == [45, 600, 600]
    finally:
        await worker.stop()  # waiting: stopped at once


def test_the_first_run_comes_about_a_minute_after_the_start_never_after_the_interval() -> None:
    """A process restarted more often than the interval must purge all the same."""
    for interval, longest in ((3600.0, 90.0), (20.0, 20.0)):
        container, *_ = _container(purge_interval_seconds=interval)
        first = [PurgeWorker(container)._first_run_after for _ in range(50)]
        assert all(0 < wait <= longest for wait in first), (interval, first)


async def test_a_stop_during_a_run_lets_the_batch_under_way_end_then_ends() -> None:
    """Nothing half-written: the batch under way commits whole, no further one starts, and
    what is left goes at the next run."""
    container, db, clock = _container()
    await _expired(db, clock, logins=3, sessions=0)
    in_batch, release = asyncio.Event(), asyncio.Event()

    def factory(*, read_only: bool = False) -> MemoryUnitOfWork:
        uow = db.unit_of_work(read_only=read_only)
        commit = uow.commit

        async def slow_commit() -> None:
            in_batch.set()
            await release.wait()
            await commit()

        uow.commit = slow_commit  # type: ignore[method-assign]
        return uow

    container.purge_expired.override(
        providers.Factory(PurgeExpired, factory, clock, NO_WEBHOOKS, batch=1)
    )
    ticks = _Ticks()
    worker = PurgeWorker(container, first_run_after=1, sleep=ticks.sleep)
    worker.start()
    await ticks.waiting(1)
    ticks.tick()
    await in_batch.wait()
    stopping = asyncio.create_task(worker.stop())
    for _ in range(20):
        await asyncio.sleep(0)
    assert worker.stopping.asked
    assert not stopping.done()  # it waits for the batch under way
    release.set()
    await stopping
    assert len(db.tables.pending_logins) == 3  # one of the 3 expired gone, and the live one
    assert len(ticks.asked) == 1  # no next run was waited for


def _failing(*outcomes: BaseException | PurgeReport) -> Any:
    class Purge:
        calls = 0

        async def execute(self, **_: object) -> PurgeReport:
            outcome = outcomes[min(Purge.calls, len(outcomes) - 1)]
            Purge.calls += 1
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

    return Purge()


async def test_failures_are_said_once_per_streak_and_never_stop_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    container, *_ = _container()
    fine = PurgeReport(0, 0, 2)
    purge = _failing(
        errors.StorageError(),
        errors.StorageError(),
        RuntimeError("a bug"),
        RuntimeError("a bug"),
        fine,
        RuntimeError("again"),
    )
    container.purge_expired.override(providers.Object(purge))
    worker = PurgeWorker(container, first_run_after=1)
    caplog.set_level(logging.INFO, logger="taskflow_link.purge")

    outcomes = [await worker.run_once() for _ in range(6)]

    assert outcomes == [None, None, None, None, fine, None]
    said = [(r.levelname, r.getMessage().split(";")[0]) for r in caplog.records]
    assert said == [
        ("WARNING", "purge unreachable (database)"),
        ("ERROR", "purge failed"),
        ("WARNING", "purge: the database works again"),
        ("WARNING", "purge works again"),
        ("INFO", said[4][1]),  # what the working run deleted
        ("ERROR", "purge failed"),  # a new streak is said again
    ]
    assert "deleted 0 pending sign-in(s)" in said[4][1]


async def test_a_run_that_found_another_purge_under_way_says_nothing_above_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    container, *_ = _container()
    container.purge_expired.override(
        providers.Object(_failing(PurgeReport(0, 0, 0, ended=PurgeEnd.ANOTHER)))
    )
    caplog.set_level(logging.INFO, logger="taskflow_link.purge")
    report = await PurgeWorker(container, first_run_after=1).run_once()
    assert report is not None
    assert report.ended is PurgeEnd.ANOTHER
    assert caplog.records == []


# -- the setting, and who runs it -----------------------------------------------------------


def test_the_purge_runs_hourly_by_default_and_zero_turns_it_off() -> None:
    assert Settings.model_fields["purge_interval_seconds"].default == 3600
    off = make_settings(purge_interval_seconds=0)
    assert not PurgeWorker.wanted(build_container(off))
    with pytest.raises(ValueError, match="purge_interval_seconds"):
        Settings(_env_file=None, secret_key=TEST_SECRET_KEY, purge_interval_seconds=-1)


@pytest.mark.parametrize(("interval", "running"), [(3600, 1), (0, 0)])
async def test_the_web_app_runs_the_purge_while_it_serves(
    interval: int, running: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve`` (and each of its ``--workers``) purges by itself unless the setting is 0;
    its shutdown stops the purge."""
    calls: list[str] = []
    start, stop = PurgeWorker.start, PurgeWorker.stop

    def started(worker: PurgeWorker) -> None:
        calls.append("start")
        start(worker)

    async def stopped(worker: PurgeWorker) -> None:
        calls.append("stop")
        await stop(worker)

    monkeypatch.setattr(PurgeWorker, "start", started)
    monkeypatch.setattr(PurgeWorker, "stop", stopped)
    container = build_container(make_settings(purge_interval_seconds=interval))
    async with AsyncTestClient(app=create_app(container)) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert calls == ["start"] * running
    assert calls == ["start", "stop"] * running


@pytest.mark.parametrize(("interval", "running"), [(60, 1), (0, 0)])
def test_the_gateway_bot_runs_the_purge_beside_its_workers(interval: int, running: int) -> None:
    from entrypoints.bot.runtime import gateway_background

    container = build_container(make_settings(purge_interval_seconds=interval))
    background = gateway_background(container)
    assert sum(isinstance(task, PurgeWorker) for task in background) == running
