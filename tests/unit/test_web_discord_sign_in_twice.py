"""A plain "Sign in with Discord" callback loaded twice (a double click on Discord's
Authorize, a reload during the round trip): the browser leaves the first load for the second,
and never receives the first one's answer (the new session's cookie). The second load, from
the same browser (its binding cookie), is handed the session the first one made (or a page
that asks again while the first is under way), as "Confirm with Discord" is; nobody else gets
anything. Through the web app (Litestar's test client, in-memory adapters, the fake
Discord)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from litestar.testing import AsyncTestClient

from adapters.memory import MemoryDatabase
from domain import errors
from domain.model import AuthPurpose, DiscordId
from entrypoints.web import create_app
from tests.harness import PASSWORD, Harness
from tests.unit.test_web_discord_confirm_twice import (
    USED,
    _cookies_back,
    _discord_held,
    _first_load,
    _refreshes_to,
    another_browser_gets_nothing,
)
from tests.web_support import Client, post_form, query, sign_up

FINISHING = "Finishing your sign-in"
FAILED = "Signing in with Discord did not go through"  # the page's title
SIGN_IN_USED = "This sign-in was already used"  # the page's title


async def _started(h: Harness, client: Client, discord_id: int, name: str) -> str:
    """Start "Sign in with Discord" (bound for ``/account?tab=1``) and approve it at Discord
    as ``discord_id``: the callback's URL."""
    h.discord_user(discord_id, username=name, email=f"{name}@example.com")
    started = await client.get(
        "/auth/discord/login?next=/account%3Ftab%3D1", follow_redirects=False
    )
    approval = h.discord.approve(started.headers["location"], DiscordId(discord_id))
    return f"/auth/discord/callback?code={approval.code}&state={approval.state}"


async def test_a_second_load_after_the_first_finished_is_signed_in(
    h: Harness, client: Client, db: MemoryDatabase
) -> None:
    """Before: 'used already', though the first load had made a session for this browser.
    Now the second load lands where the first one did, with the first one's session; loaded
    again with it, it keeps it. One account, one session."""
    callback = await _started(h, client, 7201, "dora")
    before = dict(client.cookies)
    first = await client.get(callback, follow_redirects=False)
    assert first.status_code == 302, first.text
    made = first.cookies["tfl_session"]
    _cookies_back(client, before)  # the first answer never reached the browser

    second = await client.get(callback, follow_redirects=False)
    assert second.status_code == 302, second.text
    assert second.headers["location"] == first.headers["location"]
    assert second.cookies["tfl_session"] == made
    third = await client.get(callback, follow_redirects=False)  # with that cookie
    assert third.headers["location"] == first.headers["location"]
    assert third.cookies["tfl_session"] == made
    account = await client.get("/account")
    assert account.url.path == "/account"  # signed in
    assert "dora" in account.text
    assert len(db.tables.sessions) == 1
    assert len(db.tables.accounts) == 1
    # No session is stored under its token in clear.
    assert made not in db.tables.sessions


async def test_a_second_load_while_the_first_asks_discord_is_finished_by_its_page(
    h: Harness, client: Client, db: MemoryDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second load comes while the first still asks Discord: a page that asks again in a
    moment (no script), which hands over the first one's session once it is there."""
    callback = await _started(h, client, 7202, "dora")
    before = dict(client.cookies)
    with _discord_held(h, monkeypatch) as discord:
        first = _first_load(client, callback)
        await discord.asked()

        second = await client.get(callback, follow_redirects=False)
        assert second.status_code == 200, second.text
        assert FINISHING in second.text
        assert "tfl_session" not in second.cookies
        again = _refreshes_to(second.text)
        assert again.startswith("/auth/discord/confirming?state=")
        still = await client.get(again, follow_redirects=False)
        assert FINISHING in still.text

        discord.answer()
        made = (await first).cookies["tfl_session"]
    _cookies_back(client, before)
    done = await client.get(again, follow_redirects=False)
    assert done.status_code == 302, done.text
    assert done.headers["location"] == "/account?tab=1"
    assert done.cookies["tfl_session"] == made
    assert (await client.get("/account")).url.path == "/account"
    assert len(db.tables.sessions) == 1


async def test_a_second_load_says_so_when_the_first_failed(
    h: Harness, client: Client, db: MemoryDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first load made no session (here Discord failed): the page the second load
    answered meanwhile says signing in did not go through, not 'used already'."""
    callback = await _started(h, client, 7203, "dora")
    with _discord_held(h, monkeypatch) as discord:
        first = _first_load(client, callback)
        await discord.asked()
        waiting = await client.get(callback, follow_redirects=False)
        assert FINISHING in waiting.text
        discord.fail(errors.DiscordUnavailable())
        assert (await first).status_code == 502
    for url in (_refreshes_to(waiting.text), callback):
        answer = await client.get(url, follow_redirects=False)
        assert answer.status_code == 400, answer.text
        assert FAILED in answer.text
    assert not db.tables.sessions
    [pending] = [p for p in db.tables.pending_logins.values() if p.purpose is AuthPurpose.LOGIN]
    assert pending.failed_at is not None


async def test_another_browser_gets_nothing(
    h: Harness, client: Client, db: MemoryDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The callback's URL without the flow's binding cookie (a proxy's log, a shared
    history): 'used already', while the first load is under way and after, and no
    session."""
    callback = await _started(h, client, 7204, "dora")
    async with AsyncTestClient(app=create_app(h.container)) as thief:
        await another_browser_gets_nothing(h, monkeypatch, client, thief, callback)
    assert len(db.tables.sessions) == 1


async def test_a_second_load_after_the_minute_gets_nothing(
    h: Harness, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same browser more than a minute after the first load made its session: 'used
    already', as before (the session is handed over for a double click, not later on)."""
    callback = await _started(h, client, 7205, "dora")
    before = dict(client.cookies)
    assert (await client.get(callback, follow_redirects=False)).status_code == 302
    _cookies_back(client, before)
    h.clock.advance(timedelta(minutes=1, seconds=1))
    refused = await client.get(callback, follow_redirects=False)
    assert refused.status_code == 410
    assert USED in refused.text
    assert "tfl_session" not in refused.cookies


def _confirming(callback: str) -> str:
    """The page a second load leads to while the first is under way (``CONFIRMING_PAGE``)."""
    return "/auth/discord/confirming?state=" + query(callback)["state"]


async def test_a_second_load_after_its_session_was_signed_out_says_so_at_once(
    h: Harness, client: Client, db: MemoryDatabase
) -> None:
    """Signed out within the minute, then the page back from Discord reloaded (or the
    waiting page's address opened). Before: 'Finishing your sign-in…' until the first load's
    time was up (the session it made, ended, was taken for one not made yet), then 'used
    already'. Now at once: this sign-in was used already, with a way to sign in again, and
    no session handed over or made."""
    callback = await _started(h, client, 7206, "dora")
    assert (await client.get(callback, follow_redirects=False)).status_code == 302
    signed_out = await post_form(client, "/account", "/signout", {})
    assert signed_out.url.path == "/"
    assert not db.tables.sessions
    for url in (callback, _confirming(callback)):
        again = await client.get(url, follow_redirects=False)
        assert again.status_code == 410, again.text
        assert SIGN_IN_USED in again.text
        assert FINISHING not in again.text
        assert 'href="/auth/discord/login?next=/account%3Ftab%3D1"' in again.text
        assert "Sign in with Discord" in again.text
        assert "tfl_session" not in again.cookies
    assert not db.tables.sessions


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Dest": "image", "Sec-Fetch-Mode": "no-cors"},
        {"Sec-Fetch-Dest": "iframe", "Sec-Fetch-Mode": "navigate"},
        {"Sec-Fetch-Mode": "cors"},  # Chromium 76 to 79: no Sec-Fetch-Dest
        {"Sec-Fetch-Dest": "document", "Sec-Fetch-Mode": "navigate", "Sec-Purpose": "prefetch"},
    ],
)
async def test_the_waiting_page_loaded_as_no_page_hands_over_nothing(
    h: Harness, client: Client, db: MemoryDatabase, headers: dict[str, str]
) -> None:
    """``/auth/discord/confirming`` loaded as no page of its own (an image, a frame, a
    script's request, a prefetch): as the callback, a 403 page that hands over no session and
    ends none (it rotates: the browser's old session ended there). Before, a sibling
    subdomain's ``<img>`` of it (or a speculation rule's prefetch) had the session's cookie
    set in an answer nobody looked at. The browser's own load then gets it."""
    await sign_up(client, "olga")
    old = client.cookies["tfl_session"]
    callback = await _started(h, client, 7207, "dora")
    before = dict(client.cookies)
    first = await client.get(callback, follow_redirects=False)
    assert first.status_code == 302, first.text
    made = first.cookies["tfl_session"]
    _cookies_back(client, before)  # the first answer never reached the browser
    sessions = set(db.tables.sessions)
    assert len(sessions) == 1  # the first load ended the old one (it had it)

    refused = await client.get(_confirming(callback), headers=headers, follow_redirects=False)
    assert refused.status_code == 403, refused.text
    assert "tfl_session" not in refused.cookies
    assert set(db.tables.sessions) == sessions
    assert client.cookies["tfl_session"] == old

    looked_at = await client.head(_confirming(callback), follow_redirects=False)
    assert looked_at.status_code == 200
    assert "tfl_session" not in looked_at.cookies

    done = await client.get(_confirming(callback), follow_redirects=False)
    assert done.status_code == 302, done.text
    assert done.cookies["tfl_session"] == made


NEW_PASSWORD = "a brand new passphrase 7"


async def _renewed_by_a_form(client: Client) -> str:
    """The session a Discord sign-in made, renewed by a form (a password chosen: a proof of
    identity, under a new token, the old one ended): the browser's cookie now."""
    before = client.cookies["tfl_session"]
    chosen = await post_form(
        client, "/account", "/account/password", {"new_password": NEW_PASSWORD}
    )
    assert "Your password is saved" in chosen.text, chosen.text
    renewed = client.cookies["tfl_session"]
    assert renewed != before
    return renewed


async def test_a_load_again_after_its_session_was_renewed_goes_on_signed_in(
    h: Harness, client: Client, db: MemoryDatabase
) -> None:
    """Signed in, the session renewed by a form within the minute (a password chosen), then
    the page back from Discord reloaded. Before: 'that session has ended since' (410), while
    this browser was signed in under the renewed session. Now: on to the sign-in's
    destination, signed in as before; nothing handed over (no cookie set), nothing ended."""
    callback = await _started(h, client, 7208, "dora")
    assert (await client.get(callback, follow_redirects=False)).status_code == 302
    renewed = await _renewed_by_a_form(client)
    sessions = set(db.tables.sessions)
    for url in (callback, _confirming(callback)):
        again = await client.get(url, follow_redirects=False)
        assert again.status_code == 302, again.text
        assert again.headers["location"] == "/account?tab=1"
        assert "tfl_session" not in again.cookies
        assert client.cookies["tfl_session"] == renewed
        assert set(db.tables.sessions) == sessions
    assert (await client.get("/account")).url.path == "/account"  # still signed in
    # Later on too: this browser is signed in as that sign-in left it.
    h.clock.advance(timedelta(minutes=5))
    later = await client.get(callback, follow_redirects=False)
    assert later.headers["location"] == "/account?tab=1"
    assert "tfl_session" not in later.cookies


async def test_a_load_again_with_the_session_it_made_goes_on_after_the_minute(
    h: Harness, client: Client, db: MemoryDatabase
) -> None:
    """The page back from Discord reloaded more than a minute after it signed in, this
    browser still signed in with the session it made: on to its destination (nothing to hand
    over: the browser holds it), where it said 'used already'."""
    callback = await _started(h, client, 7209, "dora")
    first = await client.get(callback, follow_redirects=False)
    made = first.cookies["tfl_session"]
    h.clock.advance(timedelta(minutes=1, seconds=1))
    again = await client.get(callback, follow_redirects=False)
    assert again.status_code == 302, again.text
    assert again.headers["location"] == "/account?tab=1"
    assert "tfl_session" not in again.cookies
    assert client.cookies["tfl_session"] == made
    assert len(db.tables.sessions) == 1


async def test_a_load_again_without_the_renewed_session_hands_nothing_over(
    h: Harness, client: Client, db: MemoryDatabase
) -> None:
    """The session renewed, but this browser holds only the token the sign-in made (the
    renewal's answer lost), or another account's session: the renewed one is nobody's to be
    handed at the callback. 'Used already', in words that do not say the session ended (it
    lives on, renewed)."""
    callback = await _started(h, client, 7210, "dora")
    made = (await client.get(callback, follow_redirects=False)).cookies["tfl_session"]
    await _renewed_by_a_form(client)
    sessions = set(db.tables.sessions)
    client.cookies.set("tfl_session", made)  # ended by the renewal
    again = await client.get(callback, follow_redirects=False)
    assert again.status_code == 410, again.text
    assert SIGN_IN_USED in again.text
    assert "ended since" not in again.text
    assert "tfl_session" not in again.cookies
    assert set(db.tables.sessions) == sessions
    async with AsyncTestClient(app=create_app(h.container)) as other:
        await sign_up(other, "olga")
        client.cookies.set("tfl_session", other.cookies["tfl_session"])
    refused = await client.get(callback, follow_redirects=False)
    assert refused.status_code == 410, refused.text
    assert "tfl_session" not in refused.cookies


async def test_signing_out_after_the_answer_was_lost_ends_the_session_it_made(
    h: Harness, client: Client, db: MemoryDatabase
) -> None:
    """The first load's answer never reached the browser (the tab closed under it, another
    page opened meanwhile), which stayed signed in to the account it had before; its person
    signs out. Before, the session that load made lived on, held by nobody, and the page back
    from Discord opened again within the minute (the next person at a shared computer going
    back in the history) was handed it: signed in to the account the person had just signed
    out of. Now signing out ends it, as it ends a form's renewal whose answer was lost, and
    that load says this sign-in was used already."""
    await sign_up(client, "olga")  # the session this browser had before
    callback = await _started(h, client, 7231, "dora")
    before = dict(client.cookies)
    first = await client.get(callback, follow_redirects=False)
    assert first.status_code == 302, first.text
    _cookies_back(client, before)  # the answer lost: still signed in as olga
    signed_out = await post_form(client, "/account", "/signout", {})
    assert signed_out.url.path == "/"
    assert not db.tables.sessions

    again = await client.get(callback, follow_redirects=False)
    assert again.status_code == 410, again.text
    assert SIGN_IN_USED in again.text
    assert "tfl_session" not in again.cookies
    assert (await client.get("/account", follow_redirects=False)).status_code != 200
    assert not db.tables.sessions


async def test_signing_in_with_discord_again_keeps_only_the_new_session(
    h: Harness, client: Client, db: MemoryDatabase
) -> None:
    """Two sign-ins in a minute in one browser (each its own binding value): the second one
    ends the first one's session, as any sign-in ends the browser's, and keeps its own."""
    first = await client.get(await _started(h, client, 7232, "dora"), follow_redirects=False)
    assert first.status_code == 302, first.text
    second = await client.get(await _started(h, client, 7233, "erin"), follow_redirects=False)
    assert second.status_code == 302, second.text
    [session] = db.tables.sessions.values()
    account = await client.get("/account")
    assert "erin" in account.text
    assert session.account_id != next(
        a.id for a in db.tables.accounts.values() if a.username == "dora"
    )


@pytest.mark.parametrize("ends", ["/signin", "/signup", "discord"])
async def test_signing_in_again_ends_the_session_whose_answer_was_lost(
    h: Harness, client: Client, db: MemoryDatabase, ends: str
) -> None:
    """As signing out does (above), whatever else replaces this browser's session in its own
    transaction (a password sign-in, a sign-up, another Discord sign-in) ends the session of
    a Discord sign-in of this browser's whose answer never reached it: its page back from
    Discord opened again within the minute hands nothing over. (The sign-in ended the session
    the browser had: the account page's "sign out" buttons are not shown to it.)"""
    await sign_up(client, "olga")  # the session this browser had before
    callback = await _started(h, client, 7241, "dora")
    before = dict(client.cookies)
    first = await client.get(callback, follow_redirects=False)
    assert first.status_code == 302, first.text
    _cookies_back(client, before)  # the answer lost: olga's cookie (her session ended)
    dora = next(a.id for a in db.tables.accounts.values() if a.username == "dora")
    if ends == "/signin":
        data = {"login": "olga", "password": PASSWORD}
        assert (await post_form(client, "/signin", "/signin", data)).url.path == "/account"
    elif ends == "/signup":
        await sign_up(client, "pia")
    else:
        second = await client.get(await _started(h, client, 7242, "erin"), follow_redirects=False)
        assert second.status_code == 302, second.text
    assert not [s for s in db.tables.sessions.values() if s.account_id == dora]

    again = await client.get(callback, follow_redirects=False)
    assert again.status_code == 410, again.text
    assert "tfl_session" not in again.cookies
    assert not [s for s in db.tables.sessions.values() if s.account_id == dora]


async def test_a_second_load_ends_nothing_this_browser_got_meanwhile(
    h: Harness, client: Client, db: MemoryDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attacker's review: while the first load asked Discord, this browser signed in
    elsewhere (another tab, a password), and that load's answer never reached it. Before,
    that load started its session all the same and its second load handed it over (ending
    the session the browser had got meanwhile, which otherwise lived on held by nobody). Now
    the password sign-in marks the Discord round trip of this browser's binding value, and
    that load starts no session: neither load hands anything over, and the session the
    browser got meanwhile, which it holds, goes on (one session, olga's)."""
    await sign_up(client, "olga")
    callback = await _started(h, client, 7251, "dora")
    with _discord_held(h, monkeypatch) as discord:
        first = _first_load(client, callback)
        await discord.asked()
        data = {"login": "olga", "password": PASSWORD}
        assert (await post_form(client, "/signin", "/signin", data)).url.path == "/account"
        meanwhile = dict(client.cookies)
        discord.answer()
        assert "tfl_session" not in (await first).cookies
    _cookies_back(client, meanwhile)

    second = await client.get(callback, follow_redirects=False)
    assert second.status_code == 409, second.text
    assert "tfl_session" not in second.cookies
    assert await h.container.current_session().execute(meanwhile["tfl_session"]) is not None
    olga = next(a.id for a in db.tables.accounts.values() if a.username == "olga")
    assert [s.account_id for s in db.tables.sessions.values()] == [olga]
