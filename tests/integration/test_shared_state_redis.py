"""What several instances share through Redis (rate-limit stores, sign-in throttles, the
interaction replay guard), and what happens while Redis is away: each instance falls back to
its own memory, says so once, and shares again when Redis is back, without a restart."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta

import pytest
from litestar.testing import AsyncTestClient

from adapters.attempts import StorePasswordAttempts
from adapters.shared_state import SharedState
from domain.policies import password_retry_wait
from entrypoints.agreement import check_agreement
from entrypoints.container import _readiness_checks, build_container
from entrypoints.health import Readiness
from entrypoints.settings import Settings
from entrypoints.web import create_app
from tests.harness import TEST_SECRET_KEY, Harness, make_settings, webhook_secret
from tests.integration.redis_server import RedisServer
from tests.web_support import SITE, check_site_budget


def _instances(url: str) -> tuple[SharedState, SharedState]:
    """Two processes' views of one Redis (retry at once after a failure, for the test). A
    generous timeout: past it an instance would use its own memory, and on a busy machine the
    "shared" checks would fail for that alone."""
    return (
        SharedState(url, retry_after=0, timeout=10),
        SharedState(url, retry_after=0, timeout=10),
    )


async def test_two_instances_share_stores_throttles_and_replays(redis_url: str) -> None:
    a, b = _instances(redis_url)
    try:
        await a.store("auth-rate-limit").set("client", "3", expires_in=60)
        assert await b.store("auth-rate-limit").get("client") == b"3"
        # Namespaces keep purposes apart.
        assert await b.store("api-rate-limit").get("client") is None

        now = datetime(2030, 1, 1, tzinfo=UTC)
        for attempts in (StorePasswordAttempts(a.store("password-attempts")),) * 2:
            await attempts.reserve(
                "account-1", now, forget_after=timedelta(minutes=15), wait_for=lambda *_: None
            )
        seen_by_b = await StorePasswordAttempts(b.store("password-attempts")).failures("account-1")
        assert seen_by_b == (2, now)

        assert await a.replay_guard.first_time("interaction:42", 600)
        assert not await b.replay_guard.first_time("interaction:42", 600)
        assert not await a.replay_guard.first_time("interaction:42", 600)
        assert await b.replay_guard.first_time("interaction:43", 600)
    finally:
        await a.close()
        await b.close()


async def test_deployments_with_their_own_prefix_share_nothing(redis_url: str) -> None:
    """Two deployments on one Redis database (staging and production): with the same prefix
    one's traffic would spend the other's budgets and its interactions count as replays."""
    staging = SharedState(redis_url, timeout=10, retry_after=0, prefix="staging")
    production = SharedState(redis_url, timeout=10, retry_after=0, prefix="production")
    also_production = SharedState(redis_url, timeout=10, retry_after=0, prefix="production")
    try:
        assert (await staging.counter("auth-rate-limit").hit("client:203.0.113.1", 60))[0] == 1
        assert (await production.counter("auth-rate-limit").hit("client:203.0.113.1", 60))[0] == 1
        hit = await also_production.counter("auth-rate-limit").hit("client:203.0.113.1", 60)
        assert hit[0] == 2  # the same deployment's other instance: shared
        assert await staging.replay_guard.first_time("interaction:7", 600)
        assert await production.replay_guard.first_time("interaction:7", 600)
        assert not await also_production.replay_guard.first_time("interaction:7", 600)
        await staging.store("password-attempts").set("account-1", "3", expires_in=60)
        assert await production.store("password-attempts").get("account-1") is None
        assert await staging.store("password-attempts").get("account-1") == b"3"
        assert staging.redis is not None
        keys = [k if isinstance(k, str) else k.decode() for k in await staging.redis.keys("*")]
        assert all(k.startswith(("staging:", "production:")) for k in keys), keys
    finally:
        for shared in (staging, production, also_production):
            await shared.close()


async def test_an_instance_refuses_a_replay_it_saw_after_redis_restarted_empty(
    redis_url: str,
) -> None:
    a, b = _instances(redis_url)
    try:
        assert await a.replay_guard.first_time("interaction:9", 600)
        assert a.redis is not None
        await a.redis.flushdb()  # a restart without persistence
        assert not await a.replay_guard.first_time("interaction:9", 600)  # it saw it
        # ...and Redis knows it again from that check.
        assert not await b.replay_guard.first_time("interaction:9", 600)
        await a.redis.flushdb()
        # A replay sent first to an instance that never checked it cannot be known (the
        # README says so).
        c = SharedState(redis_url, retry_after=0, timeout=10)
        try:
            assert await c.replay_guard.first_time("interaction:9", 600)
        finally:
            await c.close()
    finally:
        await a.close()
        await b.close()


async def test_rate_limit_hits_at_once_on_two_instances_are_each_counted_once(
    redis_url: str,
) -> None:
    """The rate limits' counter: one atomic step in Redis per hit (no read-then-write, no lock
    in the process), so a burst spread over instances is counted exactly."""
    a, b = _instances(redis_url)
    try:
        hits = await asyncio.gather(
            *(shared.counter("api-rate-limit").hit("key:burst", 60) for shared in (a, b) * 25)
        )
        assert sorted(n for n, _ in hits) == list(range(1, 51))
        assert all(0 < left <= 60 for _, left in hits)
        assert await b.counter("auth-rate-limit").hit("key:burst", 60) == (1, 60)  # apart
        # A window ends in Redis too: a later hit opens a new one.
        short = a.counter("api-rate-limit")
        assert (await short.hit("key:short", 1))[0] == 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while (await short.hit("key:short", 1))[0] != 1:
            assert loop.time() < deadline, "the window never ended"
            await asyncio.sleep(0.2)
    finally:
        await a.close()
        await b.close()


async def test_tries_reserved_at_once_on_two_instances_are_counted_one_by_one(
    redis_url: str,
) -> None:
    """The password throttle's count is updated atomically in Redis (WATCH/MULTI): guesses
    sent at once to two instances are counted one after the other, none lost, so exactly
    the free tries get through."""
    a, b = _instances(redis_url)
    now = datetime(2030, 1, 1, tzinfo=UTC)
    instances = [StorePasswordAttempts(a.store("password-attempts"))] * 2 + [
        StorePasswordAttempts(b.store("password-attempts"))
    ] * 2  # two of each: also two "processes" sharing the store's client
    try:
        waits = await asyncio.gather(
            *(
                instances[i % 4].reserve(
                    "account-2",
                    now,
                    forget_after=timedelta(hours=1),
                    wait_for=lambda failures, last: password_retry_wait(failures, last, now),
                )
                for i in range(40)
            )
        )
        assert [w for w in waits if w is None] == [None] * 5
        assert await instances[3].failures("account-2") == (5, now)
        # Written where Litestar's RedisStore reads it, with the expiry asked for.
        raw = await a.store("password-attempts").get("password-attempts:account-2")
        assert raw is not None
        assert b'"failures": 5' in raw
        assert (
            0
            < (await a.store("password-attempts").expires_in("password-attempts:account-2") or 0)
            <= 3600
        )
    finally:
        await a.close()
        await b.close()


def _reserve(
    shared: SharedState, key: str, now: datetime, *, forget_after: timedelta = timedelta(hours=1)
) -> Awaitable[timedelta | None]:
    """A password try for ``key`` on ``shared``'s instance, whose clock says ``now``."""
    return StorePasswordAttempts(shared.store("password-attempts")).reserve(
        key,
        now,
        forget_after=forget_after,
        wait_for=lambda failures, last: password_retry_wait(failures, last, now),
    )


async def test_the_password_back_off_is_timed_by_redis_not_by_the_hosts_clocks(
    redis_url: str,
) -> None:
    """The back-off compared the failure time one instance wrote with another's clock: a
    host an hour or more ahead forgot the failures (free guesses), one behind made honest
    users wait for as long as it was behind. Now the time since the last failure is what
    Redis' clock says (the key's TTL, set at each failure), so the wait is the back-off's."""
    a, b = _instances(redis_url)
    now = datetime(2030, 1, 1, tzinfo=UTC)
    try:
        for _ in range(20):  # the 20th and on: the longest wait (15 min) from the last one
            await StorePasswordAttempts(a.store("password-attempts")).reserve(
                "account-skew", now, forget_after=timedelta(hours=1), wait_for=lambda *_: None
            )
        behind = await _reserve(b, "account-skew", now - timedelta(hours=3))
        assert behind is not None
        assert timedelta(0) < behind <= timedelta(minutes=15)  # not 3 h 15 min
        ahead = await _reserve(b, "account-skew", now + timedelta(hours=2))
        assert ahead is not None  # not forgotten: a free guess
        assert timedelta(0) < ahead <= timedelta(minutes=15)
        assert await StorePasswordAttempts(b.store("password-attempts")).failures(
            "account-skew"
        ) == (20, now)
    finally:
        await a.close()
        await b.close()


async def test_password_failures_counted_in_memory_during_an_outage_go_back_to_redis(
    redis_url: str, redis_server: RedisServer
) -> None:
    """While Redis was away each instance counted wrong passwords in its memory, and when it
    answered again those counts were dropped (and Redis' own, if any, carried on): each outage
    gave about five more free guesses per instance. Now the instance that finds Redis back
    merges them into Redis: the larger count, and the later failure (the longer time left)."""
    a, b = _instances(redis_url)
    assert a.health is not None
    await a.health.stop()  # only a's calls find Redis back (after b wrote, below)
    early, later = datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, 0, 5, tzinfo=UTC)
    b_attempts = StorePasswordAttempts(b.store("password-attempts"))
    try:
        redis_server.stop_server()
        for _ in range(5):  # a's free tries, in its memory only
            assert await _reserve(a, "account-during", later) is None
        assert await _reserve(a, "account-during", later) is not None
        for _ in range(7):  # and more (from an instance of old): the longest wait, 15 min
            await StorePasswordAttempts(a.store("password-attempts")).reserve(
                "account-during", later, forget_after=timedelta(hours=1), wait_for=lambda *_: None
            )
        for _ in range(2):
            assert await _reserve(a, "account-fewer", later) is None
        for _ in range(3):
            wait = await _reserve(a, "account-more", later, forget_after=timedelta(minutes=10))
            assert wait is None
        assert await _reserve(a, "account-later", later) is None
        redis_server.start_server()  # empty

        # Meanwhile on b, Redis answering: counts a has not written back yet.
        async def on_b(key: str, times: int, forget_after: timedelta) -> None:
            for _ in range(times):
                await b_attempts.reserve(
                    key, early, forget_after=forget_after, wait_for=lambda *_: None
                )

        await on_b("account-fewer", 4, timedelta(hours=1))
        await on_b("account-more", 1, timedelta(hours=1))
        await on_b("account-later", 2, timedelta(minutes=10))
        assert await b_attempts.failures("account-during") == (0, None)

        await a.counter("auth-rate-limit").hit("client", 60)  # finds Redis back
        assert await b_attempts.failures("account-during") == (12, later)
        wait = await _reserve(b, "account-during", later)  # b makes it wait too
        assert wait is not None
        assert timedelta(0) < wait <= timedelta(minutes=15)
        # The larger count, and the later failure (the one with the longer time left: by
        # Redis' clock, not by what the instances' clocks wrote).
        assert await b_attempts.failures("account-fewer") == (4, early)
        assert await b_attempts.failures("account-more") == (3, early)
        assert await b_attempts.failures("account-later") == (2, later)
        store = b.store("password-attempts")
        for key in ("account-more", "account-later"):
            assert 600 < (await store.expires_in(f"password-attempts:{key}") or 0) <= 3600
        # Written back once: a second outage starts a's memory afresh.
        redis_server.stop_server()
        assert await StorePasswordAttempts(a.store("password-attempts")).failures(
            "account-during"
        ) == (0, None)
    finally:
        redis_server.start_server()
        await a.close()
        await b.close()


async def test_rate_limit_hits_counted_in_memory_during_an_outage_go_back_to_redis(
    redis_url: str, redis_server: RedisServer
) -> None:
    """The rate limits' hits an instance counted in its memory while Redis was away were
    dropped when Redis answered again: each outage gave a client a fresh budget per instance.
    Now the instance that finds Redis back adds them to Redis' window for the key (opening one
    that ends when its own would, if Redis has none)."""
    a, b = _instances(redis_url)
    assert a.health is not None
    await a.health.stop()  # only a's calls find Redis back (after b's hit, below)
    try:
        redis_server.stop_server()
        limit = a.counter("auth-rate-limit")  # a window long enough for a busy machine
        assert [(await limit.hit("client", 600))[0] for _ in range(3)] == [1, 2, 3]
        redis_server.start_server()  # empty
        assert (await b.counter("auth-rate-limit").hit("client", 600))[0] == 1

        assert await a.replay_guard.first_time("interaction:back", 600)  # finds Redis back
        hits, left = await b.counter("auth-rate-limit").hit("client", 600)
        assert hits == 5  # b's two and a's three
        assert 0 < left <= 600
        # Written back once: a second outage starts a's memory afresh.
        redis_server.stop_server()
        assert (await limit.hit("client", 600))[0] == 1
    finally:
        redis_server.start_server()
        await a.close()
        await b.close()


async def test_replay_entries_expire_in_redis(redis_url: str) -> None:
    from redis.asyncio import Redis

    a, _ = _instances(redis_url)
    client = Redis.from_url(redis_url)
    try:
        assert await a.replay_guard.first_time("interaction:7", 600)
        ttl = await client.ttl("taskflow-link:replay:interaction:7")
        assert 0 < ttl <= 600
    finally:
        await client.aclose()
        await a.close()


async def test_redis_going_away_and_coming_back(
    redis_url: str, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = _instances(redis_url)
    # This test is about the calls. Each instance's own retry (the tests below) tries Redis
    # too, one try at a time with its calls, and a call made while it tries answers from
    # memory: on a busy machine b's retry was still trying when b's call came, Redis back,
    # and the call did not see the id a had just shared. Without it, each call tries Redis.
    for shared in (a, b):
        assert shared.health is not None
        await shared.health.stop()
    readiness = Readiness({"redis": _redis_check(a)}, timeout=30)
    caplog.set_level(logging.WARNING, logger="taskflow_link.redis")
    try:
        assert await a.replay_guard.first_time("interaction:1", 600)
        assert (await readiness.report())[0]

        redis_server.stop_server()
        # Seen while Redis answered: still refused by the instance that saw it.
        assert not await a.replay_guard.first_time("interaction:1", 600)
        # Every call still answers, from this process's memory: no exception reaches a request.
        store = a.store("auth-rate-limit")
        await store.set("client", "1", expires_in=60)
        assert await store.get("client") == b"1"
        limit = a.counter("auth-rate-limit")
        assert [(await limit.hit("client", 60))[0] for _ in range(2)] == [1, 2]  # in memory
        assert await a.replay_guard.first_time("interaction:2", 600)
        assert not await a.replay_guard.first_time("interaction:2", 600)  # same instance
        assert await b.replay_guard.first_time("interaction:2", 600)  # not shared meanwhile
        ready, checks = await readiness.report()
        assert not ready
        assert checks == {"redis": "unreachable"}
        attempts = StorePasswordAttempts(a.store("password-attempts"))
        now = datetime(2030, 1, 1, tzinfo=UTC)
        for _ in range(2):  # the throttle counts in this process's memory meanwhile
            wait = await attempts.reserve(
                "account-3", now, forget_after=timedelta(hours=1), wait_for=lambda *_: None
            )
            assert wait is None
        assert await attempts.failures("account-3") == (2, now)
        outage = [r for r in caplog.records if "Redis is unreachable" in r.getMessage()]
        assert len(outage) == 2  # once per instance, not once per call

        redis_server.start_server()
        assert await a.replay_guard.first_time("interaction:3", 600)
        assert not await b.replay_guard.first_time("interaction:3", 600)  # shared again
        await a.store("auth-rate-limit").set("client", "5", expires_in=60)
        assert await b.store("auth-rate-limit").get("client") == b"5"
        assert (await readiness.report())[0]
        assert any("Redis answers again" in r.getMessage() for r in caplog.records)
    finally:
        await a.close()
        await b.close()


async def test_interaction_ids_seen_while_redis_was_away_are_shared_when_it_is_back(
    redis_url: str, redis_server: RedisServer
) -> None:
    """An id an instance saw while Redis was unreachable stayed in its memory only: once
    Redis answered again, a replay of it to another instance, within the interactions' max
    age, was accepted. Now the instance writes every id it remembers back to Redis when it
    finds Redis back (whichever call finds it: here a rate limit's), for what is left of its
    lifetime; Redis came back empty (no persistence), so ids seen before the outage go back
    too."""
    a, b = _instances(redis_url)
    try:
        assert await a.replay_guard.first_time("interaction:before", 600)
        redis_server.stop_server()
        assert await a.replay_guard.first_time("interaction:during", 300)  # memory only
        redis_server.start_server()

        await a.counter("auth-rate-limit").hit("client", 60)  # finds Redis back
        assert not await b.replay_guard.first_time("interaction:during", 300)
        assert not await b.replay_guard.first_time("interaction:before", 600)
        assert await b.replay_guard.first_time("interaction:after", 600)
        from redis.asyncio import Redis

        client = Redis.from_url(redis_url)
        try:
            assert 0 < await client.ttl("taskflow-link:replay:interaction:during") <= 300
        finally:
            await client.aclose()
    finally:
        await a.close()
        await b.close()


async def test_interaction_ids_seen_while_redis_was_away_go_back_without_another_call(
    redis_url: str, redis_server: RedisServer
) -> None:
    """The write-back waited for the instance's next call to Redis: one that serves only
    pages may make none for long, and meanwhile a replay to another instance was accepted.
    Now the instance tries Redis again on its own while it is down, and writes its ids back
    as soon as Redis answers, with no call of its own."""
    from redis.asyncio import Redis

    a, b = _instances(redis_url)
    client = Redis.from_url(redis_url)
    key = "taskflow-link:replay:interaction:during"
    try:
        redis_server.stop_server()
        assert await a.replay_guard.first_time("interaction:during", 300)  # memory only
        redis_server.start_server()

        # No call of a's from here on: only its own retry can write the id back.
        async with asyncio.timeout(60):  # a bound for a broken retry, not a measure
            while not await client.exists(key):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert not await b.replay_guard.first_time("interaction:during", 300)
        assert 0 < await client.ttl(key) <= 300
    finally:
        await client.aclose()
        await a.close()
        await b.close()


async def test_the_retry_stops_with_the_process(redis_url: str, redis_server: RedisServer) -> None:
    """Closing the shared state (the process's shutdown) ends its retry task."""
    (a, _) = _instances(redis_url)
    redis_server.stop_server()
    try:
        assert await a.replay_guard.first_time("interaction:closing", 300)
        retrying = a.health._retrying if a.health else None
        assert retrying is not None
        assert not retrying.done()
    finally:
        await a.close()
        redis_server.start_server()
    assert retrying.done()


class _Storage:
    async def ping(self) -> bool:
        return True


def _redis_check(shared: SharedState):  # type: ignore[no-untyped-def]
    """The container's check, as ``/readyz`` asks it."""
    checks = _readiness_checks(None, _Storage(), shared, None)  # type: ignore[arg-type]
    return checks["redis"]


@pytest.mark.parametrize("refusal", ["full", "read-only"])
async def test_a_redis_that_refuses_writes_is_reported(redis_url: str, refusal: str) -> None:
    """A full Redis (``maxmemory``, ``noeviction``) or a read-only one (a replica, an old
    primary after a failover) answers PING but refuses every count and replay id: each
    instance then counts in its own memory, and /readyz must say so, as for an outage (the
    instance stays ready, degraded: test_instances)."""
    a, b = _instances(redis_url)
    readiness = Readiness({"redis": _redis_check(a)}, timeout=30)
    assert a.redis is not None
    try:
        assert await readiness.report() == (True, {"redis": "ok"})
        if refusal == "full":
            await a.redis.config_set("maxmemory-policy", "noeviction")
            await a.redis.config_set("maxmemory", 1)
        else:
            await a.redis.replicaof("127.0.0.1", 1)  # a primary that never answers
        # What the check reports is what happens: a replay reaches the other instance.
        assert await a.replay_guard.first_time("interaction:11", 600)
        assert await b.replay_guard.first_time("interaction:11", 600)
        ready, checks = await readiness.report()
        assert not ready
        assert checks["redis"].startswith("refuses writes ("), checks
    finally:
        await a.redis.config_set("maxmemory", 0)
        await a.redis.replicaof("NO", "ONE")
        await a.close()
        await b.close()


async def test_readiness_probes_write_once_a_minute_not_once_each(redis_url: str) -> None:
    """/readyz asks Redis with a write (PING passes a full or read-only Redis), and anyone may
    ask /readyz: a write per probe went to the AOF and every replica, per instance and per
    anonymous request. The key is set only when absent (NX, which a full or read-only Redis
    refuses all the same: test_a_redis_that_refuses_writes_is_reported)."""
    from redis.asyncio import Redis

    a, b = _instances(redis_url)
    readiness = Readiness({"redis": _redis_check(a)}, timeout=30)
    client = Redis.from_url(redis_url)

    async def writes() -> int:
        return int((await client.info("persistence"))["rdb_changes_since_last_save"])

    try:
        before = await writes()
        for _ in range(50):
            assert await readiness.report() == (True, {"redis": "ok"})
        assert await writes() - before == 1
    finally:
        await client.aclose()
        await a.close()
        await b.close()


async def _errors_at_start(
    settings: Settings, caplog: pytest.LogCaptureFixture, *, answers_interactions: bool
) -> list[str]:
    """The errors a web instance with ``settings`` logs as it compares them at start (what
    the app does), after the earlier instances' comparisons."""
    caplog.clear()
    container = build_container(settings)
    try:
        await check_agreement(
            container,
            logging.getLogger("taskflow_link.web"),
            web=True,
            answers_interactions=answers_interactions,
        )
    finally:
        await container.shared_state().close()
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_instances_that_disagree_on_the_secret_key_or_public_url_say_so_at_start(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Instances with different secret keys (or public URLs) serve pages whose forms the
    others refuse, and break the Discord sign-ins started on the others: nothing said so.
    Each instance now compares them (a key by an HMAC of it) with the instance that started
    before it, through Redis, and logs an error naming the setting."""

    async def start(secret: str, public_url: str = "http://127.0.0.1:8000") -> list[str]:
        caplog.clear()
        settings = make_settings(redis_url=redis_url, secret_key=secret, public_url=public_url)
        async with AsyncTestClient(app=create_app(build_container(settings))):
            pass
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]

    caplog.set_level(logging.WARNING, logger="taskflow_link.web")
    first, other = TEST_SECRET_KEY, "Vq3xN8pL2mR7tY4wK9zB6cF1hJ5dS0gA-oU_eI"
    assert await start(first) == []
    assert await start(first) == []  # the same settings: nothing to say
    [differs] = await start(other)
    assert differs.startswith("TASKFLOW_LINK_SECRET_KEY differs"), differs
    [differs] = await start(other, "http://127.0.0.1:9000")
    assert differs.startswith("TASKFLOW_LINK_PUBLIC_URL differs"), differs
    # What is kept in Redis is no secret: neither key is in it.
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        names = [str(n) for n in await client.keys("taskflow-link:agreed-settings:*")]
        stored = " ".join([str(await client.get(name)) for name in names])
    finally:
        await client.aclose()
    assert "taskflow-link:agreed-settings:TASKFLOW_LINK_SECRET_KEY" in names
    assert first not in stored
    assert other not in stored


async def test_instances_that_disagree_on_the_interactions_max_age_say_so_at_start(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """helper-101's review: each instance keeps an interaction in the shared replay guard for
    twice its own TASKFLOW_LINK_DISCORD_INTERACTION_MAX_AGE_SECONDS; one that accepts older
    interactions than another answers a replay the other's entry no longer refuses."""

    import nacl.signing

    public_key = nacl.signing.SigningKey.generate().verify_key.encode().hex()

    async def start(max_age: int) -> list[str]:
        settings = make_settings(
            redis_url=redis_url,
            discord_public_key=public_key,
            discord_interaction_max_age_seconds=max_age,
        )
        return await _errors_at_start(settings, caplog, answers_interactions=True)

    caplog.set_level(logging.WARNING, logger="taskflow_link.web")
    assert await start(300) == []
    assert await start(300) == []
    [differs] = await start(3600)
    assert differs.startswith("TASKFLOW_LINK_DISCORD_INTERACTION_MAX_AGE_SECONDS differs"), differs


@pytest.mark.parametrize(
    ("setting", "one", "other"),
    [
        # A link or unlink through one that lacks the role neither gives nor takes it.
        ("discord_linked_roles", "", "1300000000000000001:1300000000000000010"),
        # Its worker keeps the emails it claims in its memory: never delivered.
        ("email_backend", "smtp", "outbox"),
        # A Discord sign-in started on one cannot be completed on the other.
        ("discord_client_id", "1300000000000000001", "1300000000000000002"),
        # Sign in with Discord links by email on one, never on the other.
        ("email_linking", "verified", "off"),
    ],
)
async def test_instances_that_disagree_on_what_they_queue_and_send_say_so_at_start(
    redis_url: str, caplog: pytest.LogCaptureFixture, setting: str, one: str, other: str
) -> None:
    """Every process queues the role changes and emails of what is done through it by its own
    settings, and its workers send whatever is queued by them: one that lacks a role, or
    keeps emails in its memory, loses its share, silently. (Webhook URLs are compared through
    the database: test_instance_sharing.)"""
    common = {
        "redis_url": redis_url,
        "webhook_urls": "https://hooks.example.com/in",
        "webhook_secret": webhook_secret("shared-state"),
        "discord_bot_token": "bot-token",
        "email_backend": "smtp",
        "smtp_host": "127.0.0.1",
        "development": True,
    }

    async def start(value: str) -> list[str]:
        settings = make_settings(**{**common, setting: value})
        return await _errors_at_start(settings, caplog, answers_interactions=False)

    caplog.set_level(logging.WARNING, logger="taskflow_link.web")
    assert await start(one) == []
    assert await start(one) == []
    [differs] = await start(other)
    assert differs.startswith(f"TASKFLOW_LINK_{setting.upper()} differs"), differs


async def test_a_process_that_does_not_answer_interactions_leaves_their_max_age_compared(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A gateway bot (or a web instance without Discord's public key) has no maximum age of
    interactions to compare: starting between two web instances, it no longer wipes what
    the first left for the second."""
    import nacl.signing

    public_key = nacl.signing.SigningKey.generate().verify_key.encode().hex()

    async def start(max_age: int | None) -> list[str]:
        extra = {} if max_age is None else {"discord_public_key": public_key}
        settings = make_settings(
            redis_url=redis_url, discord_interaction_max_age_seconds=max_age or 300, **extra
        )
        answers = max_age is not None
        return await _errors_at_start(settings, caplog, answers_interactions=answers)

    caplog.set_level(logging.WARNING, logger="taskflow_link.web")
    assert await start(300) == []
    assert await start(None) == []
    [differs] = await start(3600)
    assert differs.startswith("TASKFLOW_LINK_DISCORD_INTERACTION_MAX_AGE_SECONDS differs"), differs


async def test_public_urls_that_differ_by_a_trailing_slash_agree(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The service drops a trailing "/" from TASKFLOW_LINK_PUBLIC_URL (its links, the redirect
    URI): two instances whose URLs differ only by it work together, and were told at start
    that a Discord sign-in started on one fails on the other."""

    async def start(public_url: str) -> list[str]:
        caplog.clear()
        settings = make_settings(redis_url=redis_url, public_url=public_url)
        container = build_container(settings)
        async with AsyncTestClient(app=create_app(container)):
            pass
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]

    caplog.set_level(logging.WARNING, logger="taskflow_link.web")
    # (A path is refused: the app serves at the root of its host.)
    assert await start("http://127.0.0.1:8000") == []
    assert await start("http://127.0.0.1:8000/") == []
    [differs] = await start("http://localhost:8000/")
    assert differs.startswith("TASKFLOW_LINK_PUBLIC_URL differs"), differs


async def test_an_ipv6_clients_48_shares_a_budget_in_redis(redis_url: str) -> None:
    """The /48's budget (64 times a /64's) counts in Redis as the /64s' do, for every
    instance (the in-memory one: tests/unit/test_instances.py)."""
    settings = make_settings(redis_url=redis_url, forwarded_allow_ips="127.0.0.1")
    h = Harness.build(build_container(settings))
    try:
        await check_site_budget(create_app(h.container, rate_limit_per_minute=1))
    finally:
        await h.container.shared_state().close()
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        names = [str(n) for n in await client.keys("taskflow-link:auth-rate-limit*")]
    finally:
        await client.aclose()
    assert any(name.endswith(f"{SITE}::/48") for name in names), names


async def test_a_call_past_max_connections_is_no_outage(redis_url: str) -> None:
    """With ``?max_connections=`` in the URL, a call past it (a burst of requests: anyone can
    send one) made redis-py answer "Too many connections", which counted as Redis being down:
    the whole process then kept its limits and replay guard in its own memory until the retry,
    and a burst every ``retry_after`` kept it so. Now only the calls past it use this process's
    memory, as the README says; Redis stays shared for the others."""
    a = SharedState(f"{redis_url}?max_connections=1", retry_after=600, timeout=10)
    b = SharedState(redis_url, retry_after=0, timeout=10)
    assert a.redis is not None
    try:
        async with a.redis.pipeline(transaction=True) as held:
            await held.watch("taskflow-link:held")  # the pool's one connection, held
            assert (await a.counter("auth-rate-limit").hit("client", 60))[0] == 1  # memory
            # Nor is /readyz's check (anyone may ask it) during such a burst.
            assert await a.problem() is None
        assert a.health is not None
        assert not a.health.down
        assert await a.replay_guard.first_time("interaction:after-burst", 600)
        assert not await b.replay_guard.first_time("interaction:after-burst", 600)
    finally:
        await a.close()
        await b.close()


async def test_an_id_seen_past_max_connections_goes_back_to_redis(redis_url: str) -> None:
    """A call past ``max_connections`` keeps its interaction id in this process's memory only;
    with no outage, nothing wrote it back (an outage's recovery does): a replay of it to
    another instance was accepted for good. An attacker's burst picks when that happens. Now
    the next call that gets a connection writes back what was kept meanwhile (and the replay
    guard's calls have a pool of their own: the id is in Redis at once)."""
    a = SharedState(f"{redis_url}?max_connections=1", retry_after=600, timeout=10)
    b = SharedState(redis_url, retry_after=0, timeout=10)
    assert a.redis is not None
    try:
        async with a.redis.pipeline(transaction=True) as held:
            await held.watch("taskflow-link:held")  # the pool's one connection, held
            assert await a.replay_guard.first_time("interaction:in-burst", 600)  # memory
        assert (await a.counter("auth-rate-limit").hit("client", 60))[0] == 1  # a connection
        assert not await b.replay_guard.first_time("interaction:in-burst", 600)
    finally:
        await a.close()
        await b.close()


async def test_a_replay_to_an_instance_whose_pool_is_full_is_refused(redis_url: str) -> None:
    """A replay guard's call past ``max_connections`` used this process's memory only: a
    replay of an interaction another instance saw was accepted by one whose pool a burst of
    cheap requests (anyone may send them) held full. Now the guard's calls have a pool of
    their own, where a call waits its turn for a connection."""
    a = SharedState(redis_url, retry_after=0, timeout=10)
    b = SharedState(f"{redis_url}?max_connections=1", retry_after=600, timeout=10)
    assert b.redis is not None
    try:
        assert await a.replay_guard.first_time("interaction:seen-by-a", 600)
        async with b.redis.pipeline(transaction=True) as held:
            await held.watch("taskflow-link:held")  # the pool's one connection, held
            assert (await b.counter("auth-rate-limit").hit("client", 60))[0] == 1  # memory
            assert not await b.replay_guard.first_time("interaction:seen-by-a", 600)
            assert await b.replay_guard.first_time("interaction:new", 600)
        assert b.health is not None
        assert not b.health.down
        assert not await a.replay_guard.first_time("interaction:new", 600)
    finally:
        await a.close()
        await b.close()


async def test_a_replay_guard_call_waits_for_a_connection_of_its_pool(redis_url: str) -> None:
    """The guard's own pool full too (interactions at once): a call waits for a connection
    to come back (up to the timeout setting) rather than use this process's memory."""
    a = SharedState(redis_url, retry_after=0, timeout=10)
    b = SharedState(f"{redis_url}?max_connections=1", retry_after=600, timeout=60)
    assert b.replay_redis is not None
    try:
        assert await a.replay_guard.first_time("interaction:seen-first-by-a", 600)
        async with b.replay_redis.pipeline(transaction=True) as held:
            await held.watch("taskflow-link:held")  # the guard pool's one connection, held
            check = asyncio.create_task(
                b.replay_guard.first_time("interaction:seen-first-by-a", 600)
            )
            await asyncio.sleep(0)
            assert not check.done()  # waiting for the connection
        assert not await check
        assert b.health is not None
        assert not b.health.down
    finally:
        await a.close()
        await b.close()


async def test_ids_seen_while_down_go_back_when_a_call_under_way_finds_redis_back(
    redis_url: str, redis_server: RedisServer
) -> None:
    """A call that started before an outage and answered after it (Redis back, or a slow
    Redis: one call timed out, one under way answered) said Redis was back, but only the call
    that tries Redis again wrote back the interaction ids this process saw meanwhile: those
    stayed in its memory only, and a replay of one to another instance was accepted. Now
    whichever call finds Redis back writes them back first."""
    a, b = SharedState(redis_url, retry_after=600, timeout=10), _instances(redis_url)[1]
    assert a.redis is not None
    redis = a.redis
    go_on = asyncio.Event()

    async def under_way() -> object:
        await go_on.wait()
        return await redis.set("taskflow-link:under-way", b"1", ex=60)

    async def nothing() -> None:
        return None

    try:
        assert a.health is not None
        call = asyncio.create_task(a.health.call(under_way, nothing))
        await asyncio.sleep(0)  # under way, Redis up
        redis_server.stop_server()
        await a.counter("auth-rate-limit").hit("client", 60)  # finds it down
        assert a.health.down
        assert await a.replay_guard.first_time("interaction:during", 300)  # memory only
        redis_server.start_server()
        go_on.set()
        await call  # answered: Redis is back
        assert not a.health.down
        assert not await b.replay_guard.first_time("interaction:during", 300)
    finally:
        await a.close()
        await b.close()


async def test_a_redis_that_evicts_keys_is_named_at_start(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis with a ``maxmemory`` and a policy that evicts (``allkeys-lru``, a managed
    Redis' usual default) drops interaction ids and counts early when it fills, silently: a
    replay is accepted once more, a budget starts again. The README said so; nothing at start
    did. Now an instance says so when Redis tells its policy (``CONFIG GET``; nothing when it
    may not)."""
    from redis.asyncio import Redis

    async def start() -> list[str]:
        caplog.clear()
        settings = make_settings(redis_url=redis_url)
        async with AsyncTestClient(app=create_app(build_container(settings))):
            pass
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]

    caplog.set_level(logging.WARNING, logger="taskflow_link.web")
    admin = Redis.from_url(redis_url, decode_responses=True)
    before = await admin.config_get("maxmemory*")
    try:
        assert await start() == []  # noeviction, Redis' default
        await admin.config_set("maxmemory", "512mb")
        await admin.config_set("maxmemory-policy", "allkeys-lru")
        [evicts] = await start()
        assert "maxmemory-policy is allkeys-lru" in evicts, evicts
        await admin.config_set("maxmemory-policy", "noeviction")
        assert await start() == []
    finally:
        await admin.config_set("maxmemory", str(before["maxmemory"]))
        await admin.config_set("maxmemory-policy", str(before["maxmemory-policy"]))
        await admin.aclose()
