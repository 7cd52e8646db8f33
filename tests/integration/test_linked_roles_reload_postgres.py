"""Linked Roles' verification URL started signed in, its callback loaded again while the first
load is under way, on real Postgres (read committed: each statement sees the last commit). The
page that asks again must never say "used already" to the browser of a round trip that went
through, nor "connected" for one that failed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from adapters.sql import SqlDatabase
from adapters.sql.repositories import SqlPendingLogins
from domain import errors
from domain.model import DiscordId, RoleSync
from domain.ports import DiscordTokens
from domain.use_cases import AuthCompleted, AuthOutcome, BrowserCookies
from tests.fakes.role_connections import connected, role_harness
from tests.harness import Harness
from tests.integration.postgres import PostgresServer


@pytest.fixture
async def r(postgres: PostgresServer, pg_db: SqlDatabase) -> AsyncIterator[Harness]:
    h = role_harness(storage="sql", database_url=postgres.url)
    try:
        yield h
    finally:
        await h.container.sql_db().dispose()


async def _held(
    r: Harness, monkeypatch: pytest.MonkeyPatch, discord_id: int
) -> tuple[Callable[[], Awaitable[AuthCompleted]], Callable[[], Awaitable[AuthCompleted]], Any]:
    """An account linked (and connected) to ``discord_id``, its verification URL started
    signed in and approved at Discord, whose token exchange waits until told (``go``, with
    ``failure`` or not): the callback's load, and the page a load again answers meanwhile."""
    account_id = await connected(r, discord_id, username=f"u{discord_id}")
    r.clock.advance(timedelta(seconds=5))  # a while later: that connection is not this one
    session = await r.session_for(account_id)
    started = await r.container.start_linked_role().execute(
        session_token=session, browser_tokens=[]
    )
    approval = r.discord.approve(started.authorize_url, DiscordId(discord_id))
    exchange = r.discord.exchange_code
    held = SimpleNamespace(asked=asyncio.Event(), go=asyncio.Event(), failure=None)

    async def held_exchange(*, code: str, code_verifier: str) -> DiscordTokens:
        held.asked.set()
        await held.go.wait()
        if held.failure is not None:
            raise held.failure
        return await exchange(code=code, code_verifier=code_verifier)

    monkeypatch.setattr(r.discord, "exchange_code", held_exchange)

    def load() -> Awaitable[AuthCompleted]:
        return r.container.complete_discord_auth().execute(
            state=approval.state,
            code=approval.code,
            error=None,
            browser=BrowserCookies(session_token=session, bindings=started.browser_tokens),
        )

    def page() -> Awaitable[AuthCompleted]:
        return r.container.finish_discord_confirmation().execute(
            state=approval.state, browser_tokens=started.browser_tokens, session_token=session
        )

    return load, page, held


async def test_loads_again_wait_for_the_first_then_show_its_connection(
    r: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    load, page, held = await _held(r, monkeypatch, 7701)
    first = asyncio.ensure_future(load())
    await held.asked.wait()
    meanwhile = await asyncio.gather(load(), load(), page())
    assert {(d.outcome, d.session_token) for d in meanwhile} == {(AuthOutcome.CONFIRMING, None)}
    held.go.set()
    done = await first
    assert (done.outcome, done.role_sync) == (AuthOutcome.ALREADY_LINKED, RoleSync.PUSHED)
    after = await asyncio.gather(load(), page())
    assert {(d.outcome, d.session_token, d.role_sync) for d in after} == {
        (AuthOutcome.ALREADY_LINKED, None, RoleSync.PUSHED)
    }


async def test_the_first_load_finishing_while_the_page_reads_is_shown_done(
    r: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first load commits the grant right after the page read the pending login (not
    failed, then): the page's later reads see it, and it says done, never 'used already'."""
    load, page, held = await _held(r, monkeypatch, 7702)
    first = asyncio.ensure_future(load())
    await held.asked.wait()
    get = SqlPendingLogins.get
    between = SimpleNamespace(armed=True)

    async def get_then_let_the_first_load_finish(repo: SqlPendingLogins, digest: str) -> Any:
        found = await get(repo, digest)
        if between.armed:
            between.armed = False
            held.go.set()
            await first  # committed before the page's next read
        return found

    monkeypatch.setattr(SqlPendingLogins, "get", get_then_let_the_first_load_finish)
    done = await page()
    assert (await first).outcome is AuthOutcome.ALREADY_LINKED
    assert (done.outcome, done.session_token) == (AuthOutcome.ALREADY_LINKED, None)


async def test_a_first_load_that_fails_meanwhile_is_told_as_failed(
    r: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    load, page, held = await _held(r, monkeypatch, 7703)
    first = asyncio.ensure_future(load())
    await held.asked.wait()
    assert (await page()).outcome is AuthOutcome.CONFIRMING
    held.failure = errors.DiscordUnavailable()
    held.go.set()
    with pytest.raises(errors.DiscordUnavailable):
        await first
    for again in (load, page):
        with pytest.raises(errors.LinkedRoleVerificationFailed):
            await again()
