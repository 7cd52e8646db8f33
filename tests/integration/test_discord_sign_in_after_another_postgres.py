"""One person's "Sign in with Discord" whose callback's first load still waits on Discord
while the next person at the same browser signs in with Discord, on Postgres. Before, the
later sign-in marked nothing (a Discord sign-in in another tab must not stop the same
person's), so the first load made its session afterwards, under the token derived from its
binding value, and its callback opened again within the minute from that browser (the next
person going back in the history) was handed the first person's session. The later sign-in
now records whom it signed in (``PendingLogin.superseded_by``) on the browser's other round
trips: a load that would sign in anyone else starts nothing; the same person's other tab
still finishes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from adapters.sql import SqlDatabase
from adapters.sql.tables import sessions
from domain import errors
from domain.model import DiscordId
from domain.use_cases import AuthCompleted, BrowserCookies
from tests.harness import Harness
from tests.integration.lock_order import first_call_held, waiting_harness
from tests.integration.postgres import PostgresServer


@pytest.fixture
async def h(postgres: PostgresServer, pg_db: SqlDatabase) -> AsyncIterator[Harness]:
    async with waiting_harness(postgres) as harness:
        yield harness


async def _start(h: Harness, discord_id: int, bindings: tuple[str, ...]) -> tuple[Any, Any]:
    h.discord_user(discord_id, username=f"d{discord_id}", email=f"d{discord_id}@example.com")
    started = await h.container.start_discord_login().execute(
        next_path=None, browser_tokens=list(bindings)
    )
    return started, h.discord.approve(started.authorize_url, DiscordId(discord_id))


async def _sessions(database: SqlDatabase) -> int:
    async with database.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(sessions))).scalar_one())


async def _while_another_signs_in(
    h: Harness, monkeypatch: pytest.MonkeyPatch, first_id: int, second_id: int
) -> tuple[asyncio.Future[AuthCompleted], Any, BrowserCookies, AuthCompleted]:
    """The first person's load, held at Discord while the second signs in with Discord in
    the same browser (its binding cookie holding both values), then let go: that load, the
    first approval, the browser and the second sign-in."""
    first, first_approval = await _start(h, first_id, ())
    second, second_approval = await _start(h, second_id, first.browser_tokens)
    browser = BrowserCookies(bindings=second.browser_tokens)
    asked, go = first_call_held(
        monkeypatch,
        h.discord,
        "exchange_code",
        before=True,
        when=lambda *, code, code_verifier: code == first_approval.code,
    )
    load = asyncio.ensure_future(
        h.container.complete_discord_auth().execute(
            state=first_approval.state,
            code=first_approval.code,
            error=None,
            browser=BrowserCookies(bindings=first.browser_tokens),
        )
    )
    await asked.wait()
    later = await h.container.complete_discord_auth().execute(
        state=second_approval.state, code=second_approval.code, error=None, browser=browser
    )
    assert later.session_token is not None
    go.set()
    return load, first_approval, BrowserCookies(later.session_token, None, browser.bindings), later


async def test_the_next_persons_discord_sign_in_stops_the_first_persons_load(
    h: Harness, pg_db: SqlDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    load, approval, browser, _ = await _while_another_signs_in(h, monkeypatch, 7911, 7912)
    with pytest.raises(errors.DiscordSignInStopped):
        await load
    assert await _sessions(pg_db) == 1  # the second person's
    # The first person's callback, opened again from that browser, hands nothing over.
    with pytest.raises(errors.DiscordSignInStopped):
        await h.container.finish_discord_confirmation().execute(
            state=approval.state,
            browser_tokens=browser.bindings,
            session_token=browser.session_token,
        )


async def test_the_same_persons_other_tab_still_finishes(
    h: Harness, pg_db: SqlDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both tabs the same Discord account's: the first load still signs in (as before, the
    later tab's answer and the earlier one's each their own session)."""
    h.discord_user(7913, username="d7913", email="d7913@example.com")
    # The account made by an earlier sign-in: both tabs sign in to it.
    started, approval = await _start(h, 7913, ())
    await h.container.complete_discord_auth().execute(
        state=approval.state,
        code=approval.code,
        error=None,
        browser=BrowserCookies(bindings=started.browser_tokens),
    )
    load, _, _, later = await _while_another_signs_in(h, monkeypatch, 7913, 7913)
    done = await load
    assert done.session_token is not None
    assert done.account_id == later.account_id
