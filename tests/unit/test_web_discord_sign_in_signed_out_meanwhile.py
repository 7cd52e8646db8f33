"""A browser that signs out, or signs in as someone else, while the first load of a "Sign in
with Discord" callback still waits on Discord (the code's exchange): before, that load made
its session afterwards, under the token derived from the round trip's binding value, and the
callback opened again within the minute (the next person at a shared computer going back in
the history) was handed it. The sign-out ended the sessions of the browser's binding values,
but that one was not there yet. Now the sign-out marks the round trips of its binding values
(``PendingLogin.signed_out_at``), and a load that finds its own marked starts no session:
it answers that the sign-in was stopped, its cookies untouched, and so does its callback
loaded again. Through the web app (Litestar's test client, in-memory adapters, the fake
Discord)."""

from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient

from adapters.memory import MemoryDatabase
from domain.model import AuthPurpose
from entrypoints.web import create_app
from tests.harness import PASSWORD, Harness
from tests.unit.test_web_discord_confirm_twice import (
    _cookies_back,
    _discord_held,
    _first_load,
    _refreshes_to,
)
from tests.unit.test_web_discord_sign_in_twice import FINISHING, _started
from tests.web_support import Client, post_form, sign_up

STOPPED = "This sign-in with Discord was stopped"  # the page's title


def _dora(db: MemoryDatabase) -> list[object]:
    return [a for a in db.tables.accounts.values() if a.username == "dora"]


def _pending(db: MemoryDatabase) -> object:
    [pending] = [p for p in db.tables.pending_logins.values() if p.purpose is AuthPurpose.LOGIN]
    return pending


async def test_signing_out_while_the_first_load_asks_discord_starts_no_session(
    h: Harness, client: Client, db: MemoryDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signed out while the first load asks Discord: that load starts no session (nor makes
    the account it would have made), and says so; its callback loaded again, at once and
    after that load, hands nothing over."""
    await sign_up(client, "olga")
    callback = await _started(h, client, 7301, "dora")
    with _discord_held(h, monkeypatch) as discord:
        first = _first_load(client, callback)
        await discord.asked()
        signed_out = await post_form(client, "/account", "/signout", {})
        assert signed_out.url.path == "/"
        # Loaded again meanwhile: told at once, not "finishing" (its first load starts none).
        again = await client.get(callback, follow_redirects=False)
        assert again.status_code == 409, again.text
        assert STOPPED in again.text
        assert FINISHING not in again.text
        discord.answer()
        stopped = await first
    assert stopped.status_code == 409, stopped.text
    assert STOPPED in stopped.text
    assert "tfl_session" not in stopped.cookies
    assert not db.tables.sessions
    assert not _dora(db)  # the account it would have made: rolled back with the session
    for _ in range(2):
        again = await client.get(callback, follow_redirects=False)
        assert again.status_code == 409, again.text
        assert STOPPED in again.text
        assert "tfl_session" not in again.cookies
    assert not db.tables.sessions
    assert (await client.get("/account", follow_redirects=False)).status_code != 200


async def test_signing_in_as_someone_else_meanwhile_keeps_that_sign_in(
    h: Harness, client: Client, db: MemoryDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signed in with a password (as olga) while the first load asks Discord: that load
    starts no session, and its answer leaves olga's cookie as it is."""
    await sign_up(client, "olga")
    await post_form(client, "/account", "/signout", {})
    callback = await _started(h, client, 7302, "dora")
    with _discord_held(h, monkeypatch) as discord:
        first = _first_load(client, callback)
        await discord.asked()
        data = {"login": "olga", "password": PASSWORD}
        assert (await post_form(client, "/signin", "/signin", data)).url.path == "/account"
        discord.answer()
        stopped = await first
    assert stopped.status_code == 409, stopped.text
    assert "tfl_session" not in stopped.cookies
    assert not _dora(db)
    account = await client.get("/account")
    assert account.url.path == "/account"
    assert "olga" in account.text
    assert len(db.tables.sessions) == 1


async def test_signed_out_before_coming_back_from_discord_starts_no_session(
    h: Harness, client: Client, db: MemoryDatabase
) -> None:
    """Signed out in another tab while at Discord's page (the round trip started): coming
    back signs nobody in."""
    await sign_up(client, "olga")
    callback = await _started(h, client, 7303, "dora")
    await post_form(client, "/account", "/signout", {})
    stopped = await client.get(callback, follow_redirects=False)
    assert stopped.status_code == 409, stopped.text
    assert STOPPED in stopped.text
    assert not db.tables.sessions
    assert not _dora(db)


async def test_another_browsers_sign_out_stops_nothing(
    h: Harness, client: Client, db: MemoryDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the browser's own binding values name its round trips: another browser signing
    out meanwhile, with this browser's session cookie (copied, its binding cookie not),
    marks nothing, and the sign-in goes through."""
    await sign_up(client, "olga")
    callback = await _started(h, client, 7304, "dora")
    async with AsyncTestClient(app=create_app(h.container)) as stranger:
        stranger.cookies.set("tfl_session", client.cookies["tfl_session"])
        with _discord_held(h, monkeypatch) as discord:
            first = _first_load(client, callback)
            await discord.asked()
            assert (await post_form(stranger, "/account", "/signout", {})).url.path == "/"
            discord.answer()
            done = await first
    assert done.status_code == 302, done.text
    assert done.cookies["tfl_session"]
    assert _dora(db)
    assert getattr(_pending(db), "signed_out_at", None) is None
    # The copy signed olga out: dora's session is the only one left.
    [dora] = [a for a in db.tables.accounts.values() if a.username == "dora"]
    assert [s.account_id for s in db.tables.sessions.values()] == [dora.id]


async def test_a_sign_in_handed_over_stops_no_other_tabs_sign_in(
    h: Harness, client: Client, db: MemoryDatabase
) -> None:
    """A Discord sign-in in another tab stops no other tab's, also when its session is handed
    over by its callback loaded again (the first answer lost: a double click, a reload).
    Before, that hand-over ended the browser's session through a sign-out, which marked the
    round trips of every binding value of the browser: the other tab's sign-in, back from
    Discord, was told it had been stopped (409). (Both tabs the same Discord account's:
    another account's sign-in stops it, ``test_a_sign_in_as_someone_else_stops_the_other_tab``.)"""
    first_tab = await _started(h, client, 7305, "dora")
    other_tab = await _started(h, client, 7305, "dora")
    before = dict(client.cookies)  # both binding values
    first = await client.get(first_tab, follow_redirects=False)
    assert first.status_code == 302, first.text
    _cookies_back(client, before)  # its answer lost
    again = await client.get(first_tab, follow_redirects=False)
    assert again.status_code == 302, again.text
    assert again.cookies["tfl_session"] == first.cookies["tfl_session"]  # handed over

    done = await client.get(other_tab, follow_redirects=False)
    assert done.status_code == 302, done.text
    assert done.cookies["tfl_session"]
    assert "dora" in (await client.get("/account")).text


async def test_a_sign_in_as_someone_else_stops_the_other_tab(
    h: Harness, client: Client, db: MemoryDatabase
) -> None:
    """Two tabs of one browser signing in with Discord as two accounts (the next person at a
    shared computer, the first one's round trip not done): the one done first signs in, the
    other starts nothing for its own account afterwards (it would replace the first one's
    session, or be handed over by its callback opened again within the minute), and says
    so; the browser stays signed in as the first."""
    first_tab = await _started(h, client, 7308, "dora")
    other_tab = await _started(h, client, 7309, "erin")
    first = await client.get(first_tab, follow_redirects=False)
    assert first.status_code == 302, first.text
    stopped = await client.get(other_tab, follow_redirects=False)
    assert stopped.status_code == 409, stopped.text
    assert STOPPED in stopped.text
    assert "dora" in (await client.get("/account")).text
    assert not [a for a in db.tables.accounts.values() if a.username == "erin"]


async def test_the_finishing_page_tells_a_stopped_sign_in_in_its_own_words(
    h: Harness, client: Client, db: MemoryDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The callback loaded again while its first load asks Discord answers "Finishing your
    sign-in…", which refreshes towards the confirming page; signed out meanwhile, that page
    says the sign-in was stopped under the same title as the callback (before: 'That cannot
    be done', the title of any 409), with the way on to the sign-in page."""
    await sign_up(client, "olga")
    callback = await _started(h, client, 7307, "dora")
    with _discord_held(h, monkeypatch) as discord:
        first = _first_load(client, callback)
        await discord.asked()
        waiting = await client.get(callback, follow_redirects=False)
        assert FINISHING in waiting.text
        assert (await post_form(client, "/account", "/signout", {})).url.path == "/"
        stopped = await client.get(_refreshes_to(waiting.text), follow_redirects=False)
        discord.answer()
        assert (await first).status_code == 409
    assert stopped.status_code == 409, stopped.text
    assert f"<h1>{STOPPED}</h1>" in stopped.text
    assert "Start again from the sign-in page." in stopped.text
    assert 'href="/signin"' in stopped.text
    assert "tfl_session" not in stopped.cookies
    assert not db.tables.sessions
