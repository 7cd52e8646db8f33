"""A browser signing out while the first load of its "Sign in with Discord" callback waits on
Discord, on Postgres (read committed, row locks): the sign-out marks the round trip of its
binding value, and the load, which holds its round trip first in the transaction that would
start its session, either sees the mark (no session) or made its session before the mark,
which then waits for it and ends that session. Exactly one of the two, never a session that
outlives the sign-out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from adapters.sql import SqlDatabase
from adapters.sql.repositories import SqlSessions
from adapters.sql.tables import accounts, pending_login, sessions
from domain import errors
from domain.model import AccountId, DiscordId
from domain.use_cases import AuthCompleted, BrowserCookies
from tests.harness import Harness
from tests.integration.lock_order import first_call_held, waiting_harness
from tests.integration.postgres import PostgresServer
from tests.integration.waiting import until_it_waits_for_a_lock


@pytest.fixture
async def h(postgres: PostgresServer, pg_db: SqlDatabase) -> AsyncIterator[Harness]:
    async with waiting_harness(postgres) as harness:
        yield harness


async def _count(database: SqlDatabase, query: Any) -> int:
    async with database.engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


@dataclass(frozen=True)
class _Trip:
    """A signed-in browser (olga's) that started "Sign in with Discord", approved at Discord
    as a new account."""

    browser: BrowserCookies  # its session cookie and binding cookie
    olga: AccountId
    state: str
    code: str


async def _started(h: Harness, discord_id: int) -> _Trip:
    olga = await h.sign_up("olga", "olga@example.com")
    h.discord_user(discord_id, username=f"d{discord_id}", email=f"d{discord_id}@example.com")
    started = await h.container.start_discord_login().execute(next_path=None, browser_tokens=[])
    approval = h.discord.approve(started.authorize_url, DiscordId(discord_id))
    browser = BrowserCookies(session_token=olga.session_token, bindings=started.browser_tokens)
    return _Trip(browser, olga.account.id, approval.state, approval.code)


def _load(h: Harness, trip: _Trip) -> asyncio.Future[Any]:
    return asyncio.ensure_future(
        h.container.complete_discord_auth().execute(
            state=trip.state, code=trip.code, error=None, browser=trip.browser
        )
    )


async def _again(h: Harness, trip: _Trip) -> AuthCompleted:
    """Its callback loaded again, from the same browser, signed out."""
    return await h.container.finish_discord_confirmation().execute(
        state=trip.state, browser_tokens=trip.browser.bindings, session_token=None
    )


async def test_a_sign_out_committed_while_the_load_waits_on_discord_stops_it(
    h: Harness, pg_db: SqlDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    trip = await _started(h, 7801)
    asked, go = first_call_held(monkeypatch, h.discord, "exchange_code", before=True)
    first = _load(h, trip)
    await asked.wait()
    await h.container.sign_out().execute(trip.browser)  # committed while the load waits on Discord
    marked = select(func.count()).where(pending_login.c.signed_out_at.is_not(None))
    assert await _count(pg_db, marked.select_from(pending_login)) == 1
    go.set()
    with pytest.raises(errors.DiscordSignInStopped):
        await first
    assert await _count(pg_db, select(func.count()).select_from(sessions)) == 0
    made = select(func.count()).where(accounts.c.username == "d7801")
    assert await _count(pg_db, made.select_from(accounts)) == 0
    # Its callback loaded again hands nothing over.
    with pytest.raises(errors.DiscordSignInStopped):
        await _again(h, trip)


async def test_a_sign_out_beside_a_load_starting_its_session_waits_and_ends_it(
    h: Harness, pg_db: SqlDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other order: the load holds its round trip and is starting its session (not
    committed yet) when the sign-out comes. The sign-out waits for it, then ends the session
    it committed: the callback loaded again hands nothing over."""
    trip = await _started(h, 7802)
    adding, go = first_call_held(  # the load's session, once inserted
        monkeypatch, SqlSessions, "add", when=lambda repo, session: session.account_id != trip.olga
    )
    first = _load(h, trip)
    await adding.wait()  # the load holds its round trip, its session inserted
    sign_out = asyncio.ensure_future(h.container.sign_out().execute(trip.browser))
    await until_it_waits_for_a_lock(pg_db, sign_out)
    assert not sign_out.done()  # waiting for the load's lock on its round trip
    go.set()
    done: AuthCompleted = await first
    assert done.session_token is not None
    await sign_out
    assert await _count(pg_db, select(func.count()).select_from(sessions)) == 0
    with pytest.raises(errors.DiscordSignInUsed):
        await _again(h, trip)
