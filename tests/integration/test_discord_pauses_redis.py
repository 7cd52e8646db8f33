"""Discord's rate limits met by one instance hold for the others through Redis: they share
the bot token and the application, so a 429 with ``retry_after`` answers each of them alike.
Each instance learnt of a pause from a refused call of its own (one per instance per pause,
each counting towards Discord's limit of invalid requests)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from redis.asyncio import Redis

from domain import errors
from domain.model import DiscordId, LinkedRole, RoleSync
from domain.ports import RoleCallOutcome, RoleCallResult
from entrypoints.container import Container, build_container
from tests.fakes.role_connections import connected, fake, refresh_pass, role_harness, rows
from tests.harness import Harness, make_settings

ROLE = LinkedRole(DiscordId(1300000000000000001), DiscordId(1300000000000000099))


def _another_instance(h: Harness, settings: dict[str, object]) -> Container:
    """Another process on the same database, Discord and clock, with these settings."""
    other = build_container(make_settings(**settings))
    other.memory_db.override(h.container.memory_db())
    other.clock.override(h.clock)
    other.discord_oauth.override(h.discord)
    other.discord_roles.override(h.guild_roles)
    other.discord_role_connections.override(h.discord)
    return other


@pytest.fixture
def roles(redis_url: str) -> Iterator[tuple[Harness, Container]]:
    settings: dict[str, object] = {
        "discord_linked_roles": str(ROLE),
        "discord_bot_token": "bot-token",
        "redis_url": redis_url,
    }
    h = Harness.build(build_container(make_settings(**settings)))
    other = _another_instance(h, settings)
    yield h, other
    other.unwire()
    h.container.unwire()


async def _linked(h: Harness, discord_id: int) -> None:
    account = (await h.sign_up(f"u{discord_id}", f"u{discord_id}@example.com")).account
    await h.discord_link(account.id, h.discord_user(discord_id))


@pytest.mark.parametrize("global_limit", [False, True], ids=["server", "global"])
async def test_a_rate_limit_on_roles_met_by_one_instance_holds_for_the_others(
    roles: tuple[Harness, Container], redis_url: str, global_limit: bool
) -> None:
    h, other = roles
    await _linked(h, 5011)
    h.guild_roles.answer(
        RoleCallResult(RoleCallOutcome.RATE_LIMITED, retry_after=30.0, global_limit=global_limit)
    )
    report = await h.container.apply_role_changes().execute()
    assert len(h.guild_roles.calls) == 1
    assert report.paused_until == h.clock.now() + timedelta(seconds=30)
    await _linked(h, 5012)  # due now: the other instance's worker would take it

    again = await other.apply_role_changes().execute()

    assert len(h.guild_roles.calls) == 1  # the other instance asked Discord nothing
    assert again.paused_until is not None
    assert again.paused_until - h.clock.now() > timedelta(seconds=25)
    client = Redis.from_url(redis_url)
    try:
        name = "bot" if global_limit else f"server:{ROLE.guild_id}"
        assert 25_000 < await client.pttl(f"taskflow-link:discord-pause:{name}") <= 30_000
    finally:
        await client.aclose()


def _another_linked_roles_instance(h: Harness, redis_url: str) -> Container:
    """Another instance with Linked Roles, ``h``'s key and Redis."""
    return _another_instance(
        h,
        {
            "discord_role_connections": True,
            "token_encryption_key": h.container.settings().token_encryption_key,
            "redis_url": redis_url,
        },
    )


async def test_a_rate_limit_of_every_push_met_by_one_instance_holds_for_the_others(
    redis_url: str,
) -> None:
    """A resource's limit (X-RateLimit-Scope: shared), every member's push would meet it. (A
    push's global 429 is its member's own token's: it holds that member only.)"""
    h = role_harness(redis_url=redis_url)
    other = _another_linked_roles_instance(h, redis_url)
    try:
        for n, discord_id in enumerate((7400, 7401)):
            await connected(h, discord_id, f"user{n}")
        h.clock.advance(timedelta(days=1))  # linked_days changed: every row is due
        fake(h).push_outage = errors.DiscordRateLimited(30.0, shared_limit=True)
        assert (await refresh_pass(h)).paused == 2
        fake(h).push_outage = None
        calls = len(fake(h).calls)

        report = await other.refresh_role_connections().execute()

        assert fake(h).calls[calls:] == []  # the other instance pushed nothing
        assert report.paused_until is not None
        assert report.paused_until - h.clock.now() > timedelta(seconds=25)
        assert (report.pushed, report.failed) == (0, 0)
    finally:
        other.unwire()
        h.container.unwire()


async def test_a_users_used_up_push_limit_met_by_one_instance_holds_for_the_others(
    redis_url: str,
) -> None:
    """A push whose answer said the user's limit has no call left (X-RateLimit-Remaining: 0,
    the verification URL's push on one instance) leaves that user's next push until it
    resets on every instance, not on that one only: the other instance's worker pushed it,
    was answered 429, and paused every Linked Roles call of every instance (a user's 429
    is taken for the application's)."""
    h = role_harness(redis_url=redis_url)
    other = _another_linked_roles_instance(h, redis_url)
    try:
        fake(h).push_limit = 1  # a push per window (10 s), per user
        await connected(h, 7410, "ann")  # the callback's push used ann's call, on h
        await h.container.unlink_discord().execute(DiscordId(7410))  # due at once

        report = await other.refresh_role_connections().execute()

        assert fake(h).limited == 0  # no 429
        assert (report.waiting, report.paused, report.failed) == (1, 0, 0)
    finally:
        other.unwire()
        h.container.unwire()


async def test_a_users_429_met_by_one_instance_holds_that_users_pushes_on_the_others(
    redis_url: str,
) -> None:
    """A 429 to one member's push (their own token's limit, not the global one) holds that
    member's pushes on every instance until retry_after, and nobody else's: the other
    instance pushes the others and leaves that member's row due then, asking nothing."""
    h = role_harness(redis_url=redis_url)
    other = _another_linked_roles_instance(h, redis_url)
    try:
        for n, discord_id in enumerate((7430, 7431)):
            await connected(h, discord_id, f"user{n}")
        h.clock.advance(timedelta(days=1))  # linked_days changed: every row is due
        fake(h).push_limit = 2  # two pushes per window (10 s), per user
        fake(h).windows[("push", DiscordId(7430))] = (h.clock.now() + timedelta(seconds=10), 2)
        assert (await refresh_pass(h)).waiting == 1  # 7430's 429; 7431 pushed
        assert fake(h).limited == 1
        async with h.uow() as uow:
            await uow.role_connection_tokens.mark_all_due(h.clock.now())
            await uow.commit()
        calls = len(fake(h).calls)

        report = await other.refresh_role_connections().execute()

        assert fake(h).calls[calls:] == ["push"]  # 7431's; none for 7430
        assert fake(h).limited == 1
        assert (report.pushed, report.waiting, report.paused) == (1, 1, 0)
        assert report.paused_until is None
        row = rows(h)[DiscordId(7430)]
        assert h.clock.now() < row.next_push_at <= h.clock.now() + timedelta(seconds=10)
        assert (row.failures, row.claimed_until) == (0, None)
    finally:
        other.unwire()
        h.container.unwire()


async def test_a_used_up_refresh_limit_met_by_one_instance_holds_its_refreshes_only(
    redis_url: str,
) -> None:
    """A refresh whose answer said the application's limit of the refresh grant has no call
    left (X-RateLimit-Remaining: 0) leaves every instance's refreshes until it resets: the
    other instance asks for none (it would be answered 429), and leaves the row that needs
    one due then. Its pushes, limited per user, go on: it paused every Linked Roles call of
    every instance, the pushes of live tokens and the verification URL's included."""
    h = role_harness(redis_url=redis_url)
    other = _another_linked_roles_instance(h, redis_url)
    try:
        for n, discord_id in enumerate((7420, 7421)):
            await connected(h, discord_id, f"user{n}")
        h.clock.advance(timedelta(days=8))  # their access tokens have expired
        await connected(h, 7422, "eve")  # a fresh one: pushed with it
        fake(h).refresh_limit = 1  # a refresh per window (10 s), for the application
        pushed = await h.container.role_connection_pusher().sync(rows(h)[DiscordId(7420)])
        assert (pushed, fake(h).refreshes) == (RoleSync.PUSHED, 1)  # the limit's last call
        async with h.uow() as uow:
            await uow.role_connection_tokens.mark_all_due(h.clock.now())
            await uow.commit()
        calls = len(fake(h).calls)

        report = await other.refresh_role_connections().execute()

        assert "refresh" not in fake(h).calls[calls:]  # the other instance asked for none
        assert fake(h).limited == 0  # no 429
        assert (report.pushed, report.waiting, report.paused) == (2, 1, 0)
        assert report.paused_until is None
        row = rows(h)[DiscordId(7421)]
        # When the limit resets, as Redis holds it (its TTL runs on the real clock).
        assert h.clock.now() < row.next_push_at <= h.clock.now() + fake(h).limit_window
        assert (row.failures, row.claimed_until) == (0, None)
        client = Redis.from_url(redis_url)
        try:
            key = "taskflow-link:discord-pause:role_connection_refreshes"
            assert 0 < await client.pttl(key) <= 10_000
        finally:
            await client.aclose()
    finally:
        other.unwire()
        h.container.unwire()


async def test_a_pause_in_redis_longer_than_any_429s_is_shortened_to_the_longest(
    redis_url: str,
) -> None:
    """A pause key no instance wrote (by hand, a compromised Redis: ten years) paused every
    instance's role calls for as long as it said, and lengthened-never-shortened kept it so:
    it is taken, and shortened in Redis, as the longest a 429 makes (a day); an instance
    publishes no more either."""
    from adapters.shared_state import RedisDiscordPauses, RedisHealth
    from domain.ports import DISCORD_PAUSE_MAX

    longest = DISCORD_PAUSE_MAX.total_seconds()
    client = Redis.from_url(redis_url)
    try:
        pauses = RedisDiscordPauses(client, RedisHealth(), prefix="pause-cap-test")
        key = "pause-cap-test:discord-pause:bot"
        await client.set(key, b"1", px=10 * 365 * 86400 * 1000)

        left = await pauses.read(["bot", "server:1"])

        assert set(left) == {"bot"}
        assert longest - 60 < left["bot"] <= longest
        assert longest * 1000 - 60_000 < await client.pttl(key) <= longest * 1000

        await pauses.publish({"server:1": 10 * longest})

        assert await client.pttl("pause-cap-test:discord-pause:server:1") <= longest * 1000
    finally:
        await client.aclose()
