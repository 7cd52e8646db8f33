"""Web instances on one database announce themselves there, and one whose rate limits and
replay guard are kept apart from another's (no Redis beside Redis, or two Redises) names it in
its log (see ``entrypoints.web.instances``): the roster on SQLite and Postgres, the deployment
ids on a real Redis, and two ``taskflow-link serve`` processes end to end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from adapters.shared_state import SharedState
from adapters.sql import SqlDatabase
from adapters.sql.instances import Instance, SqlInstanceRoster, SqlPurgePeers
from adapters.sql.tables import web_instances
from adapters.sql.uow import WriterQueue
from adapters.webhooks import endpoint_for
from domain.model import AccountId, AuditEvent, AuditKind
from domain.use_cases import NO_WEBHOOKS, PurgeExpired
from domain.webhooks import endpoints_digest
from entrypoints.instances import (
    GATEWAY,
    WEB,
    InstanceWatch,
    gateway_kind,
    sharing_problems,
)
from entrypoints.settings import ShardPlan
from tests.bot_support import wait_until
from tests.fakes.clock import ManualClock
from tests.harness import TEST_SECRET_KEY, webhook_secret
from tests.integration.instances import environment, serving
from tests.integration.postgres import PostgresServer
from tests.servers import free_port

NAMED = "Another web instance uses this database"
MINUTE = timedelta(minutes=1)


@pytest.fixture(params=["sqlite_db", "pg_db"])
def database(request: pytest.FixtureRequest) -> SqlDatabase:
    found: SqlDatabase = request.getfixturevalue(request.param)
    return found


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def shared() -> AsyncIterator[list[SharedState]]:
    """The shared states a test makes, closed after it."""
    made: list[SharedState] = []
    yield made
    for state in made:
        await state.close()


def named(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(NAMED)]


async def test_an_instance_sees_the_others_seen_lately(
    database: SqlDatabase, clock: ManualClock
) -> None:
    first, second, third = (SqlInstanceRoster(database, clock, WEB) for _ in range(3))
    assert await first.announce("memory") == []
    clock.advance(MINUTE)
    await second.announce("redis a1")
    clock.advance(MINUTE)
    others = await third.announce("redis a1")
    assert [(o.id, o.shared_state) for o in others] == [
        (first.id, "memory"),
        (second.id, "redis a1"),
    ]  # the oldest first, never itself
    assert others[0].started_at == clock.now() - 2 * MINUTE
    # Three minutes without a word: taken as stopped (killed). Announcing again keeps one's
    # start and moves one's last sighting.
    clock.advance(2 * MINUTE)
    assert [o.id for o in await second.announce("redis a1")] == [third.id]
    [seen] = await third.announce("redis a1")
    assert (seen.id, seen.started_at, seen.seen_at) == (
        second.id,
        clock.now() - 3 * MINUTE,
        clock.now(),
    )
    # A day later the silent one's row is gone; one that stops deletes its own at once.
    clock.advance(timedelta(days=1, seconds=1))
    await third.announce("redis a1")
    await third.leave()
    async with database.engine.connect() as conn:
        ids = (await conn.execute(select(web_instances.c.id))).scalars().all()
    assert ids == []


async def test_an_instance_without_redis_is_named_once_seen_twice(
    database: SqlDatabase, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="taskflow_link.instances")
    plain = SharedState(None)
    alone = InstanceWatch(SqlInstanceRoster(database, clock, WEB), plain, 60)
    other = SqlInstanceRoster(database, clock, WEB)
    await other.announce("redis a1")
    await alone.check()  # seen once: it could be the instance this one replaces
    assert named(caplog) == []
    clock.advance(MINUTE)
    await other.announce("redis a1")
    await alone.check()
    [message] = named(caplog)
    assert str(await _row(database, other.id)) in message
    assert "it has Redis, this one has no TASKFLOW_LINK_REDIS_URL" in message
    clock.advance(MINUTE)
    await other.announce("redis a1")
    await alone.check()
    assert len(named(caplog)) == 1  # once per instance


async def test_a_process_whose_clock_is_off_the_databases_says_so(
    pg_db: SqlDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """Instances compare the times they write: an email another instance claimed is taken
    again once its lease (3 minutes; a webhook's, 2) has run out by this one's clock, and
    sent twice; a password's backoff counts from another's last failure; a /link ticket or
    a Discord sign-in lives 10 minutes by each one's clock. Hosts whose clocks had drifted
    apart did all this silently. Each instance now compares its clock with the database
    server's at each look, and says once when it is off (and once when it is right again)."""
    caplog.set_level(logging.WARNING, logger="taskflow_link.instances")
    clock = ManualClock(datetime.now(UTC) + timedelta(minutes=4))  # a host four minutes ahead
    watch = InstanceWatch(SqlInstanceRoster(pg_db, clock, WEB), SharedState(None), 60)

    await watch.check()
    [off] = [r for r in caplog.records if "clock" in r.getMessage()]
    assert off.levelno == logging.ERROR
    assert "ahead of the database server's by 4 min" in off.getMessage(), off.getMessage()
    await watch.check()
    assert len([r for r in caplog.records if "clock" in r.getMessage()]) == 1  # said once

    clock.set(datetime.now(UTC))  # synchronised again
    await watch.check()
    [_, back] = [r.getMessage() for r in caplog.records if "clock" in r.getMessage()]
    assert "agrees with the database server's again" in back, back


async def test_an_instance_that_stopped_or_went_silent_is_not_named(
    database: SqlDatabase, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="taskflow_link.instances")
    watch = InstanceWatch(SqlInstanceRoster(database, clock, WEB), SharedState(None), 60)
    replaced, killed = (
        SqlInstanceRoster(database, clock, WEB),
        SqlInstanceRoster(database, clock, WEB),
    )
    await replaced.announce("memory")
    await killed.announce("memory")
    await watch.check()
    await replaced.leave()  # stopped as it should: its row goes with it
    clock.advance(MINUTE)  # the killed one says nothing more, but is still "seen lately"
    await watch.check()
    clock.advance(MINUTE)
    await watch.check()
    assert named(caplog) == []


async def test_instances_on_two_redises_name_each_other_and_those_on_one_do_not(
    database: SqlDatabase,
    clock: ManualClock,
    redis_url: str,
    shared: list[SharedState],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="taskflow_link.instances")
    # One Redis, three deployments' worth of prefixes: "blue" twice, "green" once.
    shared += [SharedState(redis_url, prefix=p, timeout=10) for p in ("blue", "blue", "green")]
    rosters = [SqlInstanceRoster(database, clock, WEB) for _ in shared]
    watches = [InstanceWatch(r, s, 60) for r, s in zip(rosters, shared, strict=True)]
    for _ in range(3):
        for watch in watches:
            await watch.check()
        clock.advance(MINUTE)
    messages = named(caplog)
    assert len(messages) == 4  # each blue names the green one, the green one each blue
    assert all("another Redis, or another TASKFLOW_LINK_REDIS_KEY_PREFIX" in m for m in messages)
    async with database.engine.connect() as conn:
        states = dict(
            (await conn.execute(select(web_instances.c.id, web_instances.c.shared_state))).all()
        )
    blue, blue_too, green = (states[r.id] for r in rosters)
    assert blue == blue_too != green
    assert blue.startswith("redis ")
    assert green.startswith("redis ")


async def test_a_redis_that_restarts_empty_gives_one_new_deployment_id(
    redis_url: str, shared: list[SharedState]
) -> None:
    from redis.asyncio import Redis

    shared += [SharedState(redis_url, timeout=10), SharedState(redis_url, timeout=10)]
    one, two = shared
    before = await one.deployment()
    assert before is not None
    assert await two.deployment() == before
    client = Redis.from_url(redis_url)
    await client.flushall()
    await client.aclose()
    after = await two.deployment()
    assert after is not None
    assert after != before
    assert await one.deployment() == after
    assert await SharedState(None).deployment() is None


async def test_announcing_on_a_database_not_upgraded_says_so_once(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="taskflow_link.instances")
    empty = SqlDatabase(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    try:
        watch = InstanceWatch(SqlInstanceRoster(empty, clock, WEB), SharedState(None), 60)
        await watch.check()
        await watch.check()
        await watch.stop()  # deleting its row fails too, quietly
    finally:
        await empty.dispose()
    [warning] = [r.getMessage() for r in caplog.records]
    assert "run `taskflow-link db upgrade`: no such table: web_instances" in warning


async def _row(database: SqlDatabase, instance_id: str) -> Instance:
    async with database.engine.connect() as conn:
        row = (
            await conn.execute(select(web_instances).where(web_instances.c.id == instance_id))
        ).one()
    return Instance(**row._mapping)


async def test_two_serve_processes_one_without_redis_name_each_other(
    postgres: PostgresServer, pg_db: SqlDatabase, redis_url: str, tmp_path: Path
) -> None:
    common: dict[str, str | float] = {
        "storage": "sql",
        "database_url": postgres.url,
        "instance_check_seconds": 0.5,
        "discord_client_id": "1300000000000000001",
        "discord_client_secret": "not-used-here",
    }
    with_redis = environment(**common, redis_url=redis_url, redis_timeout_seconds=10)
    without = environment(**common)
    with serving(tmp_path, with_redis) as a, serving(tmp_path, without) as b:
        await wait_until(lambda: NAMED in a.output() and NAMED in b.output(), seconds=120)
        assert "this one has Redis, it has no TASKFLOW_LINK_REDIS_URL" in a.output()
        assert "it has Redis, this one has no TASKFLOW_LINK_REDIS_URL" in b.output()
    async with pg_db.engine.connect() as conn:  # both deleted their rows as they stopped
        assert (await conn.execute(select(web_instances.c.id))).all() == []


async def test_gateway_copies_are_named_when_they_receive_the_same_interactions(
    sqlite_db: SqlDatabase, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="taskflow_link.instances")
    plain = SharedState(None)
    kinds = ["gateway 0/2", "gateway 1/2", "gateway", WEB]  # none shares anything
    watches = [InstanceWatch(SqlInstanceRoster(sqlite_db, clock, k), plain, 60) for k in kinds]
    for _ in range(3):
        for watch in watches:
            await watch.check()
        clock.advance(MINUTE)
    gateway = [m for m in (r.getMessage() for r in caplog.records) if "gateway bot" in m]
    # Each shard's copy and the unsharded one receive the same; the two shards do not, and
    # a web instance shares nothing with a gateway bot (nor is there another web instance).
    assert len(gateway) == 4
    assert named(caplog) == []
    assert all("a /link button one shows is spent by the other's" in m for m in gateway)


async def test_a_database_that_refuses_connections_stops_neither_the_watch_nor_the_shutdown(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncpg's refused connection reaches the caller as the OSError it is, not as one of
    SQLAlchemy's errors: the watch's task ended at the first look (never announcing again),
    and stopping it raised that error out of the shutdown, which skipped the workers' stop
    and closing the database and Redis."""
    caplog.set_level(logging.WARNING, logger="taskflow_link.instances")
    down = SqlDatabase(f"postgresql+asyncpg://u:p@127.0.0.1:{free_port()}/x", connect_timeout=1)
    roster = SqlInstanceRoster(down, clock, WEB)
    looks = 0
    announce = roster.announce

    async def counted(*args: Any, **kwargs: Any) -> Sequence[Instance]:
        nonlocal looks
        looks += 1
        return await announce(*args, **kwargs)

    roster.announce = counted  # type: ignore[method-assign]
    try:
        watch = InstanceWatch(roster, SharedState(None), 0.05)
        watch.start()
        await wait_until(lambda: len(caplog.records) > 0)
        seen = looks
        await wait_until(lambda: looks >= seen + 3)  # several looks more (counted, not timed)
        running = watch._task
        assert running is not None
        assert not running.done()  # still looking: the database may come back
        await watch.stop()  # deleting its row fails too, quietly
    finally:
        await down.dispose()
    [warning] = [r.getMessage() for r in caplog.records]  # said once
    assert "Could not announce this instance in the database" in warning


async def test_a_gateway_bot_running_many_shards_announces_itself(
    database: SqlDatabase, clock: ManualClock
) -> None:
    """Its kind lists its shards: a count of 16 alone ("gateway 0,1,…,15/16") was 48
    characters, and Postgres refused it in a column of 40, so the watch of every such copy
    warned of a database problem and looked at nothing."""
    every = SqlInstanceRoster(database, clock, gateway_kind(ShardPlan(tuple(range(16)), 16)))
    some = tuple(range(512, 1024))
    half = SqlInstanceRoster(database, clock, gateway_kind(ShardPlan(some, 1024)))
    await every.announce("memory")
    [seen] = await half.announce("memory")
    assert seen.kind == every.kind
    assert sharing_problems(half.kind, "memory", [seen])  # a shard in common


async def test_on_sqlite_an_announcement_takes_its_turn_with_the_processs_writers(
    sqlite_db: SqlDatabase, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process's writers take turns (``WriterQueue``), the next one starting as the last
    one ends; the roster wrote beside them, meeting SQLite's lock and its busy handler's
    sleeps instead (under a steady stream of writes it could wait out the busy timeout and
    fail, and a writer whose turn came met the roster's lock the same way)."""
    roster = SqlInstanceRoster(sqlite_db, clock, WEB)
    async with sqlite_db.unit_of_work():  # a writer's turn, its transaction not begun yet
        # Whichever comes first: the announcement asks for a turn (and waits: this one
        # holds it), or it ends without one. No "not done after a while": a busy machine
        # would pass that for the wrong reason.
        asked = asyncio.Event()
        wait_turn = WriterQueue.wait_turn

        async def asking(self: WriterQueue) -> asyncio.Lock:
            asked.set()
            return await wait_turn(self)

        monkeypatch.setattr(WriterQueue, "wait_turn", asking)
        announcing = asyncio.create_task(roster.announce("memory"))
        waiting = asyncio.create_task(asked.wait())
        await asyncio.wait((announcing, waiting), timeout=60, return_when=FIRST_COMPLETED)
        waiting.cancel()
        assert asked.is_set()
        assert not announcing.done()  # it waits for its turn
    assert await announcing == []


async def test_processes_that_queue_webhooks_for_other_urls_name_each_other(
    database: SqlDatabase, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Each process queues a change's webhooks for the URLs of its own settings: a gateway bot
    started without TASKFLOW_LINK_WEBHOOK_URLS beside a web instance with them sent no
    link.deleted for an /unlink, and the receiver kept the member linked, silently. Processes
    of any kind (each changes links) now compare their URLs (a digest of them) through their
    announcements; one that announces none (an older version) is not named."""
    caplog.set_level(logging.ERROR, logger="taskflow_link.instances")
    plain = SharedState(None)
    one = endpoints_digest([endpoint_for("https://hooks.example/in")])
    other = endpoints_digest([endpoint_for("https://hooks.example/in?token=2")])
    assert one == endpoints_digest([endpoint_for("https://hooks.example/in")] * 2)
    assert one != endpoints_digest([])
    assert "hooks.example" not in one
    web = InstanceWatch(SqlInstanceRoster(database, clock, WEB), plain, 60, webhooks=one)
    same = InstanceWatch(SqlInstanceRoster(database, clock, WEB), plain, 60, webhooks=one)
    # Two unsharded gateway bots would be named for sharing no Redis; shards apart are not.
    bot = InstanceWatch(
        SqlInstanceRoster(database, clock, "gateway 0/2"),
        plain,
        60,
        webhooks=endpoints_digest([]),
    )
    shard = InstanceWatch(
        SqlInstanceRoster(database, clock, "gateway 1/2"), plain, 60, webhooks=other
    )
    older = InstanceWatch(SqlInstanceRoster(database, clock, "gateway 1/2"), plain, 60)
    for _ in range(3):
        for watch in (web, same, bot, shard, older):
            await watch.check()
        clock.advance(MINUTE)
    about = [
        r.getMessage() for r in caplog.records if "TASKFLOW_LINK_WEBHOOK_URLS" in r.getMessage()
    ]
    # web and same each name bot and shard; bot names web, same and shard; shard names web,
    # same and bot: once each. Nobody names older, nor does older name anyone.
    assert len(about) == 2 + 2 + 3 + 3, about
    assert all("never reach the URLs only the other names" in m for m in about)


RETENTION = "TASKFLOW_LINK_AUDIT_RETENTION_DAYS"


async def _audit_event(database: SqlDatabase, at: datetime) -> AuditEvent:
    event = AuditEvent(AuditKind.SIGNED_IN, at, AccountId.new())
    async with database.unit_of_work() as uow:
        await uow.audit.record(event)
        await uow.commit()
    return event


async def _audit_events(database: SqlDatabase) -> int:
    async with database.unit_of_work(read_only=True) as uow:
        return len(await uow.audit.search())


async def test_processes_that_keep_audit_events_apart_name_each_other_and_purge_alike(
    database: SqlDatabase, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Every process purged by its own TASKFLOW_LINK_AUDIT_RETENTION_DAYS, so a gateway bot
    started without it deleted at 365 days the audit events the web instances kept forever.
    Each announces its retention now: the others name it, and the purge deletes only what
    every process announced lately would."""
    caplog.set_level(logging.ERROR, logger="taskflow_link.instances")
    plain = SharedState(None)
    web = InstanceWatch(SqlInstanceRoster(database, clock, WEB), plain, 60, audit_retention_days=0)
    bot = InstanceWatch(
        SqlInstanceRoster(database, clock, GATEWAY), plain, 60, audit_retention_days=365
    )
    await _audit_event(database, clock.now() - timedelta(days=400))
    peers = SqlPurgePeers(database, clock)
    purge = PurgeExpired(
        database.unit_of_work, clock, NO_WEBHOOKS, timedelta(days=365), peers=peers
    )
    for _ in range(3):
        await web.check()
        await bot.check()
        clock.advance(MINUTE)
    assert {t.audit_retention_days for t in await peers.live()} == {0, 365}

    report = await purge.execute()  # the bot's purge, the web instance running

    assert (report.audit_events, report.audit_retention_held) == (0, 0)
    assert await _audit_events(database) == 1
    about = [r.getMessage() for r in caplog.records if RETENTION in r.getMessage()]
    assert len(about) == 2, about  # each names the other, once seen twice
    assert any("keeps audit events forever, this one 365 days" in m for m in about)

    await web.stop()  # the web instance stops (its row goes): the bot's own settings apply
    report = await purge.execute()
    assert (report.audit_events, report.audit_retention_held) == (1, None)
    await bot.stop()


async def test_a_serve_process_does_not_purge_the_audit_events_another_keeps(
    postgres: PostgresServer, pg_db: SqlDatabase, tmp_path: Path
) -> None:
    """Two ``taskflow-link serve`` processes: one keeps audit events forever, the other (its
    purge every second) would delete them at 365 days. That one holds back while the first
    runs, both name each other, and once the first stops its own retention applies."""
    old = await _audit_event(pg_db, datetime.now(UTC) - timedelta(days=400))
    common: dict[str, str | float] = {
        "storage": "sql",
        "database_url": postgres.url,
        "instance_check_seconds": 0.5,
        "discord_client_id": "1300000000000000001",
        "discord_client_secret": "not-used-here",
    }
    with contextlib.ExitStack() as keeping_stack:
        keeping = keeping_stack.enter_context(
            serving(tmp_path, environment(**common, audit_retention_days=0))
        )

        async def announced() -> bool:
            async with pg_db.engine.connect() as conn:
                rows = await conn.execute(select(web_instances.c.audit_retention_days))
                return rows.scalars().all() == [0]

        for _ in range(600):  # until it announced itself (readiness does not wait for it)
            if await announced():
                break
            await asyncio.sleep(0.1)
        assert await announced()
        purging = environment(**common, audit_retention_days=365, purge_interval_seconds=1)
        with serving(tmp_path, purging) as purger:
            await wait_until(
                lambda: (
                    RETENTION in keeping.output()
                    and "keeps audit events forever, this one 365 days" in purger.output()
                    and "keeps more" in purger.output()
                ),
                seconds=120,
            )
            assert "keeps audit events 365 days, this one forever" in keeping.output()
            assert "audit events kept forever, not the 365 days" in purger.output()
            assert await _audit_events(pg_db) == 1
            keeping_stack.close()  # it stops, and deletes its row
            await wait_until(lambda: "its own settings apply" in purger.output(), seconds=120)
            await wait_until(lambda: "1 audit event(s)" in purger.output(), seconds=120)
    async with pg_db.unit_of_work(read_only=True) as uow:
        assert old not in await uow.audit.search()


async def test_purge_expired_deletes_only_what_every_running_process_would(
    postgres: PostgresServer, pg_db: SqlDatabase, tmp_path: Path
) -> None:
    """The command from cron, given the default retention and one webhook URL, beside a
    running web instance that keeps audit events forever and names another URL: it keeps
    both, and says why."""
    from tests.integration.test_webhooks_end_to_end import taskflow_link

    now = datetime.now(UTC)
    await _audit_event(pg_db, now - timedelta(days=400))
    async with pg_db.engine.begin() as conn:
        await conn.execute(
            web_instances.insert().values(
                id="running",
                host="web-1",
                pid=1,
                kind=WEB,
                shared_state="memory",
                started_at=now,
                seen_at=now,
                webhooks=endpoints_digest([endpoint_for("https://hooks.example/other")]),
                audit_retention_days=0,
            )
        )
    env = {
        "TASKFLOW_LINK_SECRET_KEY": TEST_SECRET_KEY,
        "TASKFLOW_LINK_DATABASE_URL": postgres.url,
        "TASKFLOW_LINK_WEBHOOK_URLS": "https://hooks.example/in",
        "TASKFLOW_LINK_WEBHOOK_SECRET": webhook_secret("cron"),
    }
    code, out, err = await taskflow_link("purge-expired", env=env, cwd=tmp_path)
    assert code == 0, err
    assert "0 audit event(s)" in out
    assert "Kept audit events forever: a running web instance or gateway bot" in out
    assert "names other TASKFLOW_LINK_WEBHOOK_URLS than this process" in out
    assert "hooks.example" not in out + err
    assert await _audit_events(pg_db) == 1
