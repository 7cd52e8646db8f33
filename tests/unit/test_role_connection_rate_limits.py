"""Linked Roles under Discord's rate limits and Cloudflare's blocks, with the in-memory fakes:
a pass stops at the first 429 or block and leaves what it did not push due, without a
failure; every later call of the process (a pass, the verification URL's push) waits for the
pause, which the role for linked members shares."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain import errors
from domain.model import DiscordId, RoleSync
from domain.use_cases import RefreshRoleConnections, RoleSyncReport
from domain.use_cases.discord_pauses import CLOUDFLARE_PAUSES
from entrypoints.role_connection_worker import RoleConnectionWorker, log_report
from tests.fakes.role_connections import (
    connected,
    fake,
    linked,
    refresh_pass,
    rows,
    verify,
)
from tests.harness import Harness

IDS = [DiscordId(7400 + n) for n in range(4)]


async def all_connected_and_due(h: Harness) -> None:
    for n, discord_id in enumerate(IDS):
        await connected(h, discord_id.value, f"user{n}")
    h.clock.advance(timedelta(days=1))  # linked_days changed: every row is due


def untouched_and_due(h: Harness) -> None:
    """Every row as a rate limit leaves it: due, claimed by nobody, no failure counted."""
    for row in rows(h).values():
        assert row.failures == 0
        assert row.claimed_until is None
        assert row.next_push_at <= h.clock.now()


async def test_a_429_for_every_push_stops_the_pass_and_leaves_every_row_due_without_a_failure(
    r: Harness,
) -> None:
    """A 429 every member's push would meet (a resource's limit, X-RateLimit-Scope: shared;
    a refresh's global one, the application's, below)."""
    await all_connected_and_due(r)
    calls = len(fake(r).calls)
    fake(r).push_outage = errors.DiscordRateLimited(30.0, shared_limit=True)

    report = await refresh_pass(r)

    assert fake(r).calls[calls:] == ["push"]  # the rest of the pass was not tried
    assert report.paused == len(IDS)
    assert (report.pushed, report.failed) == (0, 0)
    assert report.paused_until == r.clock.now() + timedelta(seconds=30)
    assert not report.blocked
    untouched_and_due(r)

    fake(r).push_outage = None
    r.clock.advance(timedelta(seconds=29))
    waiting = await refresh_pass(r)  # a pass during the pause claims nothing, calls nothing
    assert waiting == RoleSyncReport(paused_until=report.paused_until)
    assert fake(r).calls[calls:] == ["push"]
    untouched_and_due(r)

    r.clock.advance(timedelta(seconds=1))
    assert (await refresh_pass(r)).pushed == len(IDS)
    assert all(linked(fake(r).connections[i]) == ("1", "1") for i in IDS)


async def test_a_retry_after_already_over_still_ends_the_pass(r: Harness) -> None:
    """A 429 with retry_after 0 (or one that has passed by the time the row is let go): the
    rows left are the ones the pass would claim again at once, in a loop of calls. (A
    resource's limit, every member's; a member's own one holds that member only, see below.)"""
    await all_connected_and_due(r)
    calls = len(fake(r).calls)
    fake(r).push_outage = errors.DiscordRateLimited(0.0, shared_limit=True)

    async def lift_after_a_few() -> None:  # bounds the loop the pass would otherwise make
        if len(fake(r).calls) - calls >= 5:
            fake(r).push_outage = None
        else:
            fake(r).during_push = lift_after_a_few

    fake(r).during_push = lift_after_a_few
    passes = RefreshRoleConnections(r.uow, r.clock, r.container.role_connection_pusher(), batch=2)

    report = await passes.execute()

    assert fake(r).calls[calls:] == ["push"]
    assert report.paused == 2  # the batch it had claimed; the rest was never claimed
    untouched_and_due(r)


async def test_a_block_pauses_every_call_for_cloudflares_back_off_never_a_failure(
    r: Harness,
) -> None:
    """Cloudflare's answer (no retry_after): 1 min, then 5, 15 and 60 after each block in a
    row, back to 1 min once a call goes through. However long it lasts, no row counts a
    failure, so none is given up for it."""
    await all_connected_and_due(r)
    calls = len(fake(r).calls)
    fake(r).push_outage = errors.DiscordRateLimited()

    for step in (*CLOUDFLARE_PAUSES, CLOUDFLARE_PAUSES[-1]):
        now = r.clock.now()
        report = await refresh_pass(r)
        assert len(fake(r).calls) == calls + 1  # one call a pause, the rest left due
        calls += 1
        assert report.blocked
        assert report.paused_until == now + step
        assert (await refresh_pass(r)).paused_until == now + step  # no call meanwhile
        assert len(fake(r).calls) == calls
        untouched_and_due(r)
        r.clock.advance(step)

    fake(r).push_outage = None
    assert (await refresh_pass(r)).pushed == len(IDS)  # one went through: the ladder restarts
    fake(r).push_outage = errors.DiscordRateLimited()
    r.clock.advance(timedelta(days=1))
    assert (await refresh_pass(r)).paused_until == r.clock.now() + CLOUDFLARE_PAUSES[0]


async def test_a_block_on_a_refresh_spends_nothing_and_counts_no_failure(r: Harness) -> None:
    await all_connected_and_due(r)
    r.clock.advance(timedelta(days=7))  # every access token expired: refreshed first
    _, refresh_tokens = fake(r).tokens_of(IDS[0])
    calls = len(fake(r).calls)
    fake(r).refresh_outage = errors.DiscordRateLimited()

    report = await refresh_pass(r)

    assert fake(r).calls[calls:] == ["refresh"]
    assert report.paused == len(IDS)
    assert report.blocked
    untouched_and_due(r)
    assert refresh_tokens <= set(fake(r).refresh_tokens)  # not spent: Discord took nothing

    fake(r).refresh_outage = None
    r.clock.advance(CLOUDFLARE_PAUSES[0])
    assert (await refresh_pass(r)).pushed == len(IDS)
    assert fake(r).refreshes == len(IDS)


async def test_the_worker_waits_out_the_pause_and_a_wake_up_meanwhile_calls_nothing(
    r: Harness,
) -> None:
    await all_connected_and_due(r)
    worker = RoleConnectionWorker(r.container, poll_seconds=60.0)
    fake(r).push_outage = errors.DiscordRateLimited(20.0, shared_limit=True)

    assert not await worker.pass_once()
    calls = len(fake(r).calls)
    assert worker.idle_seconds() == 20.0  # woken when the pause ends, before the poll
    fake(r).push_outage = None
    r.clock.advance(timedelta(seconds=15))
    await worker.pass_once()  # an unlink's wake-up, say
    assert len(fake(r).calls) == calls
    assert worker.idle_seconds() == 5.0
    r.clock.advance(timedelta(seconds=5))
    await worker.pass_once()
    assert worker.idle_seconds() == 60.0
    assert all(linked(fake(r).connections[i]) == ("1", "1") for i in IDS)
    untouched = rows(r)
    assert all(row.next_push_at > r.clock.now() for row in untouched.values())


async def test_the_verification_urls_push_waits_for_a_pause_the_worker_met(r: Harness) -> None:
    await all_connected_and_due(r)
    fake(r).push_outage = errors.DiscordRateLimited(30.0, shared_limit=True)
    await refresh_pass(r)
    fake(r).push_outage = None
    calls = len(fake(r).calls)
    account = (await r.sign_up("newcomer", "newcomer@example.com")).account
    r.discord_user(7450, username="d_newcomer")

    done = await verify(r, DiscordId(7450), signed_in=account.id)

    assert done.role_sync is RoleSync.PAUSED  # the page says it will be on Discord later
    assert fake(r).calls[calls:] == []
    untouched_and_due(r)
    r.clock.advance(timedelta(seconds=30))
    assert (await refresh_pass(r)).pushed == len(IDS) + 1


async def test_a_block_met_by_the_role_for_linked_members_holds_for_linked_roles(
    r: Harness,
) -> None:
    """Cloudflare blocks the address, whichever token the call carried."""
    await all_connected_and_due(r)
    calls = len(fake(r).calls)
    r.container.discord_pauses().blocked(r.clock.now())

    report = await refresh_pass(r)

    assert fake(r).calls[calls:] == []
    assert report.blocked
    assert report.paused_until == r.clock.now() + CLOUDFLARE_PAUSES[0]


async def test_a_tokens_own_refusal_is_still_refreshed_not_paused(r: Harness) -> None:
    """Discord's JSON 401 says this access token is no longer good: refreshed, then pushed."""
    await connected(r, IDS[0].value, "user0")
    fake(r).expire(IDS[0])
    r.clock.advance(timedelta(days=1))

    report = await refresh_pass(r)

    assert (report.pushed, report.paused) == (1, 0)
    assert fake(r).refreshes == 1


async def test_forgetting_stops_at_a_block_and_keeps_what_it_did_not_tell(r: Harness) -> None:
    await all_connected_and_due(r)
    calls = len(fake(r).calls)
    fake(r).push_outage = errors.DiscordRateLimited()

    stopped = await r.container.forget_role_connections().execute()

    assert (stopped.paused, stopped.cleared, stopped.failed, stopped.held) == (len(IDS), 0, 0, 0)
    assert stopped.blocked
    assert len(fake(r).calls) == calls + 1
    assert set(rows(r)) == set(IDS)  # kept: run again
    untouched_and_due(r)
    fake(r).push_outage = None
    r.clock.advance(CLOUDFLARE_PAUSES[0])

    assert (await r.container.forget_role_connections().execute()).cleared == len(IDS)
    assert rows(r) == {}


def test_a_stopped_pass_says_why_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="taskflow_link.role_connections"):
        until = datetime(2026, 1, 1, 12, 1, tzinfo=UTC)
        log_report(RoleSyncReport(paused=3, paused_until=until, blocked=True))
        log_report(RoleSyncReport(pushed=1, paused=2))

    blocked, limited, pushed = caplog.records
    assert blocked.levelno == logging.WARNING
    assert "3 left due" in blocked.getMessage()
    assert "blocks this address" in blocked.getMessage()
    assert "before 2026-01-01T12:01:00+00:00" in blocked.getMessage()
    assert "rate limited" in limited.getMessage()
    assert "1 pushed" in pushed.getMessage()


# -- what a 429 holds: its scope ------------------------------------------------------------------


async def two_expired_and_one_fresh(h: Harness) -> None:
    """IDS[0] and IDS[1] with access tokens that have expired (refreshed before their push,
    and first in the pass), IDS[2] with a live one; all three due."""
    for n, discord_id in enumerate(IDS[:2]):
        await connected(h, discord_id.value, f"user{n}")
    h.clock.advance(timedelta(days=8))
    await connected(h, IDS[2].value, "user2")
    h.clock.advance(timedelta(days=1))  # linked_days changed: every row is due


async def test_a_routes_429_to_a_refresh_holds_the_refreshes_only_not_the_pushes(
    r: Harness,
) -> None:
    """The refresh grant's own limit (Discord's 429 without "global": its route's, for the
    application's credentials) says nothing of the pushes, which carry each member's own
    token: those whose access token works are pushed, and so is the verification URL's new
    grant (the member is told "connected"). The rows that need a refresh wait for
    retry_after, no failure counted, their refresh tokens unspent; the pass goes on."""
    await two_expired_and_one_fresh(r)
    refresh_tokens = {i: fake(r).tokens_of(i)[1] for i in IDS[:2]}
    calls = len(fake(r).calls)
    fake(r).refresh_outage = errors.DiscordRateLimited(30.0)

    report = await refresh_pass(r)

    assert fake(r).calls[calls:] == ["refresh", "push"]  # IDS[1] asked for no refresh
    assert (report.pushed, report.waiting, report.paused, report.failed) == (1, 2, 0, 0)
    assert report.paused_until is None  # nothing holds the pushes
    for discord_id in IDS[:2]:
        row = rows(r)[discord_id]
        assert row.next_push_at == r.clock.now() + timedelta(seconds=30)
        assert (row.failures, row.claimed_until) == (0, None)
        assert refresh_tokens[discord_id] <= set(fake(r).refresh_tokens)  # not spent
    await connected(r, IDS[3].value, "user3")  # asserts the callback's push went through

    fake(r).refresh_outage = None
    r.clock.advance(timedelta(seconds=30))
    assert (await refresh_pass(r)).pushed == 2
    assert fake(r).refreshes == 2


async def test_a_global_429_to_a_refresh_holds_every_linked_roles_call(r: Harness) -> None:
    """Discord's global limit ("global": true, X-RateLimit-Global) is every route's: the pass
    stops there, and the verification URL's push waits too."""
    await two_expired_and_one_fresh(r)
    calls = len(fake(r).calls)
    fake(r).refresh_outage = errors.DiscordRateLimited(30.0, global_limit=True)

    report = await refresh_pass(r)

    assert fake(r).calls[calls:] == ["refresh"]
    assert (report.paused, report.pushed, report.waiting) == (3, 0, 0)
    assert report.paused_until == r.clock.now() + timedelta(seconds=30)
    untouched_and_due(r)
    fake(r).refresh_outage = None
    account = (await r.sign_up("newcomer", "newcomer@example.com")).account
    r.discord_user(7450, username="d_newcomer")
    assert (await verify(r, DiscordId(7450), signed_in=account.id)).role_sync is RoleSync.PAUSED
    assert fake(r).calls[calls:] == ["refresh"]


async def test_a_429_to_one_members_push_holds_that_members_pushes_only(r: Harness) -> None:
    """Discord limits the push per token (each member's own: X-RateLimit-Scope: user), so
    its 429 without "global" says nothing of the others': that member's row waits for
    retry_after (no failure counted), the others are pushed in the same pass, and the
    verification URL's push of another member goes through."""
    await all_connected_and_due(r)
    fake(r).push_limit = 1  # a push per window, per user
    used_up_elsewhere = (r.clock.now() + timedelta(seconds=30), 1)
    fake(r).windows[("push", IDS[0])] = used_up_elsewhere  # its next push is a 429

    report = await refresh_pass(r)

    assert fake(r).limited == 1
    assert (report.pushed, report.waiting, report.paused, report.failed) == (3, 1, 0, 0)
    assert report.paused_until is None  # nothing holds the others
    row = rows(r)[IDS[0]]
    assert row.next_push_at == r.clock.now() + timedelta(seconds=30)
    assert (row.failures, row.claimed_until) == (0, None)
    assert linked(fake(r).connections[IDS[0]]) == ("1", "0")  # not told yet
    assert all(linked(fake(r).connections[i]) == ("1", "1") for i in IDS[1:])
    await connected(r, 7450, "newcomer")  # asserts the callback's push went through

    r.clock.advance(timedelta(seconds=30))
    assert (await refresh_pass(r)).pushed == 1
    assert linked(fake(r).connections[IDS[0]]) == ("1", "1")
    assert fake(r).limited == 1


async def test_a_shared_429_to_a_push_holds_every_linked_roles_call(r: Harness) -> None:
    """X-RateLimit-Scope: shared is a resource's limit, every caller's, not the member's own
    token's: the others' pushes would each meet it (a 429 apiece), so the pass stops there,
    as for the global limit, and every row stays due without a failure."""
    await all_connected_and_due(r)
    calls = len(fake(r).calls)
    fake(r).push_outage = errors.DiscordRateLimited(30.0, shared_limit=True)

    report = await refresh_pass(r)

    assert fake(r).calls[calls:] == ["push"]
    assert (report.paused, report.waiting, report.pushed) == (len(IDS), 0, 0)
    assert report.paused_until == r.clock.now() + timedelta(seconds=30)
    untouched_and_due(r)


async def test_a_members_own_429_whose_retry_after_is_over_holds_that_member_only(
    r: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attacker's review: a 429 of one member's own limit whose retry_after had passed
    by the time the row was let go (0, or a moment spent telling the other instances through
    a slow Redis) was taken for the global limit's: the pass stopped there, every member after
    that one left unpushed, and the next pass claimed that member first again. Now that
    member waits a moment (no failure counted), the others are pushed, and the next pass
    does not ask Discord for that member again at once."""
    await all_connected_and_due(r)
    discord = fake(r)
    push = discord.push

    async def own_limit_first(access_token: str, connection: Any, *, used_up: Any = None) -> None:
        found = discord.access.get(access_token)
        if found is not None and found[0].discord_id == IDS[0]:
            discord.calls.append("push")
            raise errors.DiscordRateLimited(0.0)  # X-RateLimit-Scope: user
        await push(access_token, connection, used_up=used_up)

    monkeypatch.setattr(discord, "push", own_limit_first)
    calls = len(discord.calls)

    report = await refresh_pass(r)

    assert (report.pushed, report.waiting, report.paused, report.failed) == (3, 1, 0, 0)
    assert report.paused_until is None
    assert all(linked(discord.connections[i]) == ("1", "1") for i in IDS[1:])
    row = rows(r)[IDS[0]]
    assert (row.failures, row.claimed_until) == (0, None)
    assert row.next_push_at > r.clock.now()
    assert discord.calls[calls:] == ["push"] * 4

    again = await refresh_pass(r)  # at once: that member is not asked for again yet
    assert again.total == 0
    assert discord.calls[calls:] == ["push"] * 4


async def test_a_refresh_429_whose_retry_after_is_over_asks_no_more_refreshes_at_once(
    r: Harness,
) -> None:
    """The refresh grant's own limit met with retry_after 0: the rows needing a refresh wait
    a moment, and the pass asks Discord once, not once a row."""
    await all_connected_and_due(r)
    r.clock.advance(timedelta(days=7))  # every access token expired: refreshed first
    calls = len(fake(r).calls)
    fake(r).refresh_outage = errors.DiscordRateLimited(0.0)

    report = await refresh_pass(r)

    assert fake(r).calls[calls:] == ["refresh"]
    assert (report.waiting, report.paused, report.failed) == (len(IDS), 0, 0)
    assert all(row.failures == 0 and row.claimed_until is None for row in rows(r).values())


async def test_a_global_429_to_one_members_push_holds_that_members_pushes_only(
    r: Harness,
) -> None:
    """Discord's global limit is a bot's or a user's ("individuals are determined using a
    request's authentication"; X-RateLimit-Scope: global is "per bot or user"), and a push
    carries the member's own bearer token: its global 429 says that member's token made too
    many calls, nothing of the others'. An attacker's review: it paused every Linked Roles
    call of the service (every instance, with Redis), so one member's token held up everyone's
    pushes and the verification URL's. Now that member's row waits for retry_after (no
    failure counted), the others are pushed in the same pass."""
    await all_connected_and_due(r)
    fake(r).globally_limited[IDS[0]] = 30.0

    report = await refresh_pass(r)

    assert fake(r).limited == 1
    assert (report.pushed, report.waiting, report.paused, report.failed) == (3, 1, 0, 0)
    assert report.paused_until is None  # nothing holds the others
    row = rows(r)[IDS[0]]
    assert row.next_push_at == r.clock.now() + timedelta(seconds=30)
    assert (row.failures, row.claimed_until) == (0, None)
    assert all(linked(fake(r).connections[i]) == ("1", "1") for i in IDS[1:])
    await connected(r, 7450, "newcomer")  # asserts the callback's push went through

    del fake(r).globally_limited[IDS[0]]
    assert (await refresh_pass(r)).total == 0  # that member is not asked for again yet
    r.clock.advance(timedelta(seconds=30))
    assert (await refresh_pass(r)).pushed == 1
    assert linked(fake(r).connections[IDS[0]]) == ("1", "1")
    assert fake(r).limited == 1


async def test_a_push_429_both_global_and_shared_holds_every_linked_roles_call(
    r: Harness,
) -> None:
    """The safe side when a 429 says both: a resource's limit (every caller's) holds every
    Linked Roles call, whatever else it says."""
    await all_connected_and_due(r)
    calls = len(fake(r).calls)
    fake(r).push_outage = errors.DiscordRateLimited(30.0, global_limit=True, shared_limit=True)

    report = await refresh_pass(r)

    assert fake(r).calls[calls:] == ["push"]
    assert (report.paused, report.waiting, report.pushed) == (len(IDS), 0, 0)
    assert report.paused_until == r.clock.now() + timedelta(seconds=30)
    untouched_and_due(r)
