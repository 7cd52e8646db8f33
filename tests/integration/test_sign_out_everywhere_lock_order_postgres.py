"""Ending a browser's session from the account page ("Sign out" next to it, or "Sign out
everywhere"), or with a password reset in it, beside a sign-out in another browser holding
copies of its cookies (its session and its binding cookie, whose Discord sign-in's link
proposal waits, its round trip purged already: proposals outlive them), on Postgres. Each
ended the session first, then spent the proposal; the sign-out spends the proposal, then ends
the session: each held a row the other waited for, a deadlock, which Postgres broke by rolling
one back (the sign-out's a 503). They spend the browser's proposals first now, as the sign-out
does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from adapters.sql import SqlDatabase
from adapters.sql.repositories import SqlSessions
from domain.use_cases import AuthOutcome, BrowserCookies
from tests.harness import Browser, Harness
from tests.integration.lock_order import contention_noted, crossed, first_call_held, waiting_harness
from tests.integration.postgres import PostgresServer


@pytest.fixture
async def h(postgres: PostgresServer, pg_db: SqlDatabase) -> AsyncIterator[Harness]:
    async with waiting_harness(postgres, email_linking="confirm") as harness:
        yield harness


# How each ends the browser's session: with the session's id, or a reset link to its account.
Ending = Callable[[Harness, BrowserCookies, str, str], Awaitable[Any]]


def _end_all(h: Harness, browser: BrowserCookies, session_id: str, reset: str) -> Awaitable[Any]:
    return h.container.end_all_sessions().execute(browser)


def _end_this_one(
    h: Harness, browser: BrowserCookies, session_id: str, reset: str
) -> Awaitable[Any]:
    return h.container.end_session().execute(browser, session_id)


def _reset(h: Harness, browser: BrowserCookies, session_id: str, reset: str) -> Awaitable[Any]:
    return h.container.reset_password().execute(
        token=reset, new_password="a brand new password", browser=browser
    )


@pytest.mark.parametrize(
    ("ending", "held"),
    [
        (_end_all, "remove_for_account"),
        (_end_this_one, "remove_by_id"),
        (_reset, "remove_for_account"),
    ],
    ids=["everywhere", "this-one", "password-reset"],
)
async def test_ending_a_session_beside_a_sign_out_with_copies_of_its_cookies(
    h: Harness,
    pg_db: SqlDatabase,
    monkeypatch: pytest.MonkeyPatch,
    ending: Ending,
    held: str,
) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    browser = Browser()
    login = await h.discord_login(h.discord_user(9701, email="alice@example.com"), browser)
    assert login.outcome is AuthOutcome.CONFIRM_NEEDED
    # Its round trip expired and purged; the proposal lives on (30 minutes).
    h.clock.advance(timedelta(minutes=16))
    assert (await h.container.purge_expired().execute()).pending_logins == 1
    session = await h.session_for(alice.id)
    session_id = str((await h.container.list_sessions().execute(session)).current.id)
    cookies = BrowserCookies(session_token=session, bindings=browser.bindings)
    await h.container.request_password_reset().execute("alice@example.com")
    await h.deliver()
    reset = h.link_token(h.last_email("alice@example.com"), "/password/reset/")

    contended = contention_noted(monkeypatch)
    waits = first_call_held(monkeypatch, SqlSessions, held)  # the session ended: it waits
    # Then the sign-out with the copies. A deadlock: the sign-out's a 503.
    await crossed(
        pg_db,
        waits,
        ending(h, cookies, session_id, reset),
        lambda: h.container.sign_out().execute(cookies),
    )
    assert contended == []  # nor was either rolled back
    async with h.uow(read_only=True) as uow:
        assert await uow.sessions.get(h.container.tokens().digest(session)) is None
