"""Two browsers ending their sessions at once, on Postgres, when their cookies name each
other's rows (a copied cookie: each holds the session the other one's Discord sign-in made,
and the other's binding value). Each sign-out ends the same two sessions; taken in the order
its cookies listed them (its own first), the two waited for each other and Postgres aborted
one with a deadlock (a 500). They take them in one order: the second waits for the first,
then finds nothing left, and both sign out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable

import pytest
from sqlalchemy import func, select

from adapters.sql import SqlDatabase
from adapters.sql.repositories import SqlSessions
from adapters.sql.tables import sessions
from domain import errors
from domain.model import SignInMethod
from domain.use_cases import BrowserCookies
from tests.harness import Harness
from tests.integration.lock_order import (
    contention_noted,
    crossed,
    first_call_held,
    signed_in_with_discord,
    waiting_harness,
)
from tests.integration.postgres import PostgresServer
from tests.integration.waiting import until_it_waits_for_a_lock


@pytest.fixture
async def h(postgres: PostgresServer, pg_db: SqlDatabase) -> AsyncIterator[Harness]:
    async with waiting_harness(postgres) as harness:
        yield harness


async def _signed_in_with_discord(h: Harness, discord_id: int) -> tuple[str, str]:
    h.discord_user(discord_id, username=f"d{discord_id}", email=f"d{discord_id}@example.com")
    return await signed_in_with_discord(h, discord_id)


def _first_removal_held(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, asyncio.Event]:
    """From now on, the first session a sign-out ends: once ended, its transaction waits
    (holding the row) until the second event is set; the first is set when it waits."""
    return first_call_held(monkeypatch, SqlSessions, "remove")


async def _sessions_left(pg_db: SqlDatabase) -> int:
    async with pg_db.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(sessions))).scalar_one()


async def test_two_sign_outs_naming_each_others_sessions_both_go_through(
    h: Harness, pg_db: SqlDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    ada, ada_binding = await _signed_in_with_discord(h, 7901)
    bea, bea_binding = await _signed_in_with_discord(h, 7902)
    # Each browser holds its own session and the other's binding value (copied).
    first = BrowserCookies(session_token=ada, bindings=(bea_binding,))
    second = BrowserCookies(session_token=bea, bindings=(ada_binding,))
    held = _first_removal_held(monkeypatch)  # the first sign-out's
    # Neither aborted (a deadlock: StorageFault, a 500).
    await crossed(
        pg_db,
        held,
        h.container.sign_out().execute(first),
        lambda: h.container.sign_out().execute(second),
    )
    assert await _sessions_left(pg_db) == 0


async def test_sign_out_everywhere_beside_a_sign_out_ending_the_same_sessions(
    h: Harness, pg_db: SqlDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "Sign out everywhere" ends every session of the account, as a sign-out in a browser
    holding a copy of the other's binding cookie ends two of them: the account's sessions
    were deleted in the table's order (the older first), the sign-out's in the digests'."""
    tokens = h.container.tokens()
    while True:  # two sessions of one account, the newer one's digest first
        older, older_binding = await _signed_in_with_discord(h, 7903)
        newer, _ = await _signed_in_with_discord(h, 7903)
        if tokens.digest(newer) < tokens.digest(older):
            break
    everywhere = BrowserCookies(session_token=older)
    # The newer session's browser, holding a copy of the older one's binding cookie.
    copied = BrowserCookies(session_token=newer, bindings=(older_binding,))
    held = _first_removal_held(monkeypatch)  # the sign-out's, the newer session
    # Neither aborted (a deadlock: StorageFault, a 500).
    await crossed(
        pg_db,
        held,
        h.container.sign_out().execute(copied),
        lambda: h.container.end_all_sessions().execute(everywhere),
    )
    assert await _sessions_left(pg_db) == 0


async def test_sign_out_everywhere_ends_a_session_renewed_while_it_waited(
    h: Harness, pg_db: SqlDatabase
) -> None:
    """A session renewed (a proof of identity: its row's token_hash changes) while "sign out
    everywhere" waited for its lock still ends: one DELETE whose rows were its locking
    subquery's scanned the table as it was when it began, found the row under its old
    digest, not among those locked (the new one), and the renewed session lived on."""
    tokens = h.container.tokens()
    alice = (await h.sign_up("alice", "alice@example.com")).account
    copy = await h.session_for(alice.id, proved_with=SignInMethod.PASSWORD)
    owner = await h.session_for(alice.id, proved_with=SignInMethod.PASSWORD)
    renewed = tokens.issue()
    async with h.uow() as uow:  # the renewal, its row held until it commits
        assert await uow.sessions.renew(
            tokens.digest(copy), renewed.digest, h.clock.now(), SignInMethod.PASSWORD
        )
        everywhere = asyncio.ensure_future(
            h.container.end_all_sessions().execute(BrowserCookies(session_token=owner))
        )
        await until_it_waits_for_a_lock(pg_db, everywhere)
        await uow.commit()
    await everywhere
    assert await _sessions_left(pg_db) == 0


@pytest.mark.parametrize("first_by", ["everywhere", "password-reset"])
async def test_two_sign_outs_everywhere_naming_each_others_sessions_both_go_through(
    h: Harness, pg_db: SqlDatabase, monkeypatch: pytest.MonkeyPatch, first_by: str
) -> None:
    """ "Sign out everywhere" in two browsers of two accounts, each holding a copy of the
    other's binding cookie, whose Discord sign-in's session (just made) ends with it. Each
    ended its account's sessions, then the browser's others: each held one the other waited
    for, and Postgres rolled one back (a deadlock; not retried: a 503). Both now lock their
    account's sessions and the browser's together, in the digests' order. A password reset
    in the first browser did the same."""
    ada, _ = await _signed_in_with_discord(h, 7904)
    bea, _ = await _signed_in_with_discord(h, 7905)
    _, ada_binding = await signed_in_with_discord(h, 7904)
    _, bea_binding = await signed_in_with_discord(h, 7905)
    # Ada's browser holds the binding value of Bea's second sign-in, and the reverse.
    first = BrowserCookies(session_token=ada, bindings=(bea_binding,))
    second = BrowserCookies(session_token=bea, bindings=(ada_binding,))
    await h.container.request_password_reset().execute("d7904@example.com")
    await h.deliver()
    reset = h.link_token(h.last_email("d7904@example.com"), "/password/reset/")
    contended = contention_noted(monkeypatch)
    # The first one's, its account's sessions held.
    held = first_call_held(monkeypatch, SqlSessions, "remove_for_account")
    one: Awaitable[object]
    if first_by == "everywhere":
        one = h.container.end_all_sessions().execute(first)
    else:
        one = h.container.reset_password().execute(
            token=reset, new_password="a brand new password", browser=first
        )
    # A deadlock: one of them a 503.
    await crossed(pg_db, held, one, lambda: h.container.end_all_sessions().execute(second))
    assert contended == []
    # The reset's own new session only.
    assert await _sessions_left(pg_db) == (0 if first_by == "everywhere" else 1)


async def test_two_sign_outs_from_the_account_page_naming_each_others_sessions(
    h: Harness, pg_db: SqlDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "Sign out" next to the current session on the account page, in two browsers whose
    cookies name each other's sessions (each holds the other's binding value): each ended
    its own session by its id first, then the others its cookies named, and each waited for
    the one the other held (a deadlock: not retried, a 503). The browser's sessions are
    locked first now, as one set, in the digests' order: the second waits for the first."""
    ada, ada_binding = await _signed_in_with_discord(h, 7906)
    bea, bea_binding = await _signed_in_with_discord(h, 7907)
    first = BrowserCookies(session_token=ada, bindings=(bea_binding,))
    second = BrowserCookies(session_token=bea, bindings=(ada_binding,))
    ada_id = str((await h.container.list_sessions().execute(ada)).current.id)
    bea_id = str((await h.container.list_sessions().execute(bea)).current.id)
    contended = contention_noted(monkeypatch)
    # The first one's own session, held.
    removed, go = first_call_held(monkeypatch, SqlSessions, "remove_by_id")
    one = asyncio.ensure_future(h.container.end_session().execute(first, ada_id))
    await removed.wait()
    other = asyncio.ensure_future(h.container.end_session().execute(second, bea_id))
    await until_it_waits_for_a_lock(pg_db, other)
    go.set()
    # Before, a deadlock: one a 503. Now the first ends both (the second's session made
    # just now by the Discord sign-in its copied binding value names), and the second finds
    # its session ended already (404).
    assert await one is True
    with pytest.raises(errors.NotFound):
        await other
    assert contended == []
    assert await _sessions_left(pg_db) == 0
