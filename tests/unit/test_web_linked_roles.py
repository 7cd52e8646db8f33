"""``/discord/linked-role`` through Litestar's test client (memory storage, fake Discord)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from adapters.memory import MemoryDatabase
from adapters.memory.store import MemoryUnitOfWork
from domain import errors
from domain.model import DiscordId
from entrypoints.web import create_app
from tests.fakes.role_connections import InMemoryDiscordWithRoles, linked, role_harness
from tests.harness import PASSWORD, Harness
from tests.unit.test_web_discord_confirm_twice import _cookies_back, _discord_held, _first_load
from tests.web_support import csrf_token, post_form, query, sign_up

Client = AsyncTestClient[Any]


@pytest.fixture
def r() -> Harness:
    return role_harness()


@pytest.fixture
async def client(r: Harness) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(r.container)) as test_client:
        yield test_client


async def _through_discord(client: Client, r: Harness, started: object, discord_id: int) -> str:
    location = started.headers["location"]  # type: ignore[attr-defined]
    assert query(location)["scope"] == "identify role_connections.write"
    assert query(location)["code_challenge_method"] == "S256"
    approval = r.discord.approve(location, DiscordId(discord_id))
    done = await client.get(
        f"/auth/discord/callback?code={approval.code}&state={approval.state}",
        follow_redirects=False,
    )
    assert done.status_code == 302, done.text
    return str(done.headers["location"])


async def test_the_route_exists_only_with_linked_roles(h: Harness) -> None:
    async with AsyncTestClient(app=create_app(h.container)) as client:
        assert (await client.get("/discord/linked-role")).status_code == 404


async def test_a_signed_in_account_connects_in_one_round_trip(client: Client, r: Harness) -> None:
    await sign_up(client)
    r.discord_user(7301)
    # Any site can send this browser to the URL: the GET only shows what linking would do,
    # and this site's form (with a recent proof, only a button) starts the round trip.
    asked = await client.get("/discord/linked-role", follow_redirects=False)
    assert asked.status_code == 200
    assert 'name="current_password"' not in asked.text  # the sign-up is a recent proof
    assert "Continue with Discord" in asked.text
    database: MemoryDatabase = r.container.memory_db()
    assert database.tables.pending_logins == {}  # nothing started
    forged = await client.post("/discord/linked-role", data={}, follow_redirects=False)
    assert forged.status_code == 403  # no CSRF token: another site's form
    started = await client.post(
        "/discord/linked-role",
        data={"_csrf_token": csrf_token(asked.text)},
        follow_redirects=False,
    )
    assert started.status_code == 302

    landed = await _through_discord(client, r, started, 7301)

    assert landed == "/account?notice=role_connected&linked=1"
    page = await client.get(landed)
    assert "Your TaskFlow connection is on Discord" in page.text
    assert "@user7301" in page.text  # linked
    assert (
        "Discord account connected: \u2068user7301\u2069 (\u2068@user7301\u2069, id 7301)."
        in page.text
    )
    # Linked by this round trip: signing out would not undo it (on a shared computer, the
    # Discord account left signed in in the browser could then sign in to this account).
    assert "If it is not yours, unlink it below" in page.text
    assert "If it is not yours, sign out" not in page.text
    # A signed-in start asks too (the account to link may not be the browser's Discord one).
    assert query(started.headers["location"])["prompt"] == "consent"
    assert isinstance(r.discord, InMemoryDiscordWithRoles)
    assert linked(r.discord.connections[DiscordId(7301)]) == ("1", "0")


async def test_linking_first_asks_for_the_password(client: Client, r: Harness) -> None:
    await sign_up(client, "bob")
    r.discord_user(7302)
    r.clock.advance(timedelta(minutes=11))  # the sign-up's proof is no longer recent

    asked = await client.get("/discord/linked-role")
    assert asked.status_code == 200
    assert 'name="current_password"' in asked.text
    wrong = await client.post(
        "/discord/linked-role",
        data={"current_password": "not my password", "_csrf_token": csrf_token(asked.text)},
        follow_redirects=False,
    )
    assert wrong.status_code == 401
    assert "current password is not right" in wrong.text
    # The error is the password field's (see the browser test of refused forms).
    assert 'required aria-invalid="true" aria-describedby="error" autofocus>' in wrong.text
    assert 'id="error"' in wrong.text
    started = await client.post(
        "/discord/linked-role",
        data={"current_password": PASSWORD, "_csrf_token": csrf_token(wrong.text)},
        follow_redirects=False,
    )
    assert started.status_code == 302
    landed = await _through_discord(client, r, started, 7302)
    assert landed == "/account?notice=role_connected&linked=1"


async def test_signed_out_and_not_linked_is_sent_to_sign_in_first(
    client: Client, r: Harness
) -> None:
    r.discord_user(7303)
    started = await client.get("/discord/linked-role", follow_redirects=False)
    location = started.headers["location"]
    approval = r.discord.approve(location, DiscordId(7303))

    refused = await client.get(
        f"/auth/discord/callback?code={approval.code}&state={approval.state}"
    )

    assert refused.status_code == 409
    assert "not linked to a TaskFlow account yet" in refused.text
    assert 'href="/signin?next=/discord/linked-role"' in refused.text
    database: MemoryDatabase = r.container.memory_db()
    assert database.tables.role_connection_tokens == {}


async def test_signed_out_and_linked_is_signed_in(client: Client, r: Harness) -> None:
    await sign_up(client, "carol")
    r.discord_user(7304)
    asked = await client.get("/discord/linked-role")
    started = await client.post(
        "/discord/linked-role",
        data={"_csrf_token": csrf_token(asked.text)},
        follow_redirects=False,
    )
    await _through_discord(client, r, started, 7304)
    await post_form(client, "/account", "/signout", {})
    assert "Sign in" in (await client.get("/signin")).text

    started = await client.get("/discord/linked-role", follow_redirects=False)
    # Discord's consent screen, naming the Discord account signed in in this browser: on a
    # shared computer it may not be the one of the person who clicked in Discord.
    assert query(started.headers["location"])["prompt"] == "consent"
    landed = await _through_discord(client, r, started, 7304)

    assert landed == "/account?notice=role_connected"
    page = (await client.get(landed)).text
    assert "carol" in page  # signed in
    # The page says which Discord account was connected, and what to do if it is not yours.
    assert (
        "Discord account connected: \u2068user7304\u2069 (\u2068@user7304\u2069, id 7304)." in page
    )
    assert "If it is not yours, sign out" in page


_FROM_ANOTHER_SITE = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"}


async def test_another_sites_navigation_gets_a_page_to_continue_from(
    client: Client, r: Harness
) -> None:
    """An attacker's review: signed out, the verification URL signs in the TaskFlow account
    of the Discord account that comes back, and Discord sends a returning person straight
    back: any site could sign a browser in through it without a click. Another site's
    navigation (Discord's own link from a server's Linked Roles too) now gets a page of this
    site whose link starts the round trip; an account to link first still gets its form."""
    await sign_up(client, "dave")
    r.discord_user(7305)
    database: MemoryDatabase = r.container.memory_db()
    to_link = await client.get("/discord/linked-role", headers=_FROM_ANOTHER_SITE)
    assert "Continue with Discord" in to_link.text  # the form, which needs CSRF: as before
    started = await client.post(
        "/discord/linked-role",
        data={"_csrf_token": csrf_token(to_link.text)},
        follow_redirects=False,
    )
    await _through_discord(client, r, started, 7305)
    await post_form(client, "/account", "/signout", {})

    for _ in range(2):  # signed out, then signed in by the first round trip
        pending = len(database.tables.pending_logins)
        page = await client.get(
            "/discord/linked-role", headers=_FROM_ANOTHER_SITE, follow_redirects=False
        )
        assert page.status_code == 200
        assert len(database.tables.pending_logins) == pending  # nothing started
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert _ways_on(page.text) == ["/discord/linked-role", "/"]
        followed = await client.get(
            "/discord/linked-role",
            headers={**_FROM_ANOTHER_SITE, "sec-fetch-site": "same-origin"},
            follow_redirects=False,
        )
        assert followed.status_code == 302
        assert await _through_discord(client, r, followed, 7305) == (
            "/account?notice=role_connected"
        )
    assert "dave" in (await client.get("/account")).text


async def test_a_head_of_the_verification_url_starts_nothing(client: Client, r: Harness) -> None:
    """A HEAD runs as the GET it stands for, and one of the verification URL started a
    Discord round trip as the GET does. HEAD has no side effects (RFC 9110): it gets the
    status and headers of the page another site's navigation gets, and starts nothing."""
    await sign_up(client, "erin")
    r.discord_user(7306)
    database: MemoryDatabase = r.container.memory_db()
    to_link = await client.get("/discord/linked-role")
    started = await client.post(
        "/discord/linked-role",
        data={"_csrf_token": csrf_token(to_link.text)},
        follow_redirects=False,
    )
    await _through_discord(client, r, started, 7306)  # linked: the GET starts a round trip
    page = await client.get("/discord/linked-role", headers=_FROM_ANOTHER_SITE)
    pending = len(database.tables.pending_logins)

    head = await client.head("/discord/linked-role", follow_redirects=False)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(page.content))
    assert not [c for c in head.headers.get_list("set-cookie") if "tfl_oauth" in c]
    assert len(database.tables.pending_logins) == pending
    followed = await client.get("/discord/linked-role", follow_redirects=False)
    assert followed.status_code == 302  # the GET as before
    assert len(database.tables.pending_logins) == pending + 1


# -- refusals at the callback: the way on is the verification URL ------------------------------


def _ways_on(page: str) -> list[str]:
    """The buttons under a message page's words (its header's links left out)."""
    return re.findall(r'class="button[^"]*" href="([^"]+)"', page)


async def _connected(client: Client, r: Harness, username: str, discord_id: int) -> None:
    await sign_up(client, username)
    r.discord_user(discord_id)
    asked = await client.get("/discord/linked-role")
    started = await client.post(
        "/discord/linked-role",
        data={"_csrf_token": csrf_token(asked.text)},
        follow_redirects=False,
    )
    assert await _through_discord(client, r, started, discord_id) == (
        "/account?notice=role_connected&linked=1"
    )


async def test_cancelled_at_discord_leads_back_to_the_verification_url(
    client: Client, r: Harness
) -> None:
    """The account page has no Linked Roles button and the sign-in page lands on the account
    page: "Start again from your account page" (or "the sign-in page") led nowhere."""
    await _connected(client, r, "dora", 7305)
    started = await client.get("/discord/linked-role", follow_redirects=False)
    state = query(started.headers["location"])["state"]

    cancelled = await client.get(f"/auth/discord/callback?error=access_denied&state={state}")

    assert cancelled.status_code == 400
    assert "Discord did not grant access, so nothing was changed." in cancelled.text
    assert "account page" not in cancelled.text
    assert "Linked Roles" in cancelled.text
    assert _ways_on(cancelled.text) == ["/discord/linked-role", "/account"]


async def test_cancelled_signed_out_leads_back_to_the_verification_url(
    client: Client, r: Harness
) -> None:
    started = await client.get("/discord/linked-role", follow_redirects=False)
    state = query(started.headers["location"])["state"]

    cancelled = await client.get(f"/auth/discord/callback?error=access_denied&state={state}")

    assert cancelled.status_code == 400
    assert "sign-in page" not in cancelled.text
    assert _ways_on(cancelled.text) == ["/discord/linked-role"]


async def test_the_wrong_discord_account_can_try_again(client: Client, r: Harness) -> None:
    await _connected(client, r, "ezra", 7306)
    r.discord_user(7307)
    started = await client.get("/discord/linked-role", follow_redirects=False)
    approval = r.discord.approve(started.headers["location"], DiscordId(7307))

    refused = await client.get(
        f"/auth/discord/callback?code={approval.code}&state={approval.state}"
    )

    assert refused.status_code == 409
    assert "Sign in to Discord as the linked account, then try again." in refused.text
    assert _ways_on(refused.text) == ["/discord/linked-role", "/account"]


async def test_without_role_connections_write_the_words_agree(client: Client, r: Harness) -> None:
    """Discord's consent screen let the scope go: the message and the next step said "Start
    again from Discord" and then "Start again from your account page"."""
    await _connected(client, r, "finn", 7308)
    started = await client.get("/discord/linked-role", follow_redirects=False)
    location = started.headers["location"].replace("+role_connections.write", "")
    approval = r.discord.approve(location, DiscordId(7308))

    refused = await client.get(
        f"/auth/discord/callback?code={approval.code}&state={approval.state}"
    )

    assert refused.status_code == 400
    assert "role_connections.write" in refused.text
    assert "account page" not in refused.text
    assert _ways_on(refused.text) == ["/discord/linked-role", "/account"]


async def test_discord_down_leads_back_to_the_verification_url(client: Client, r: Harness) -> None:
    started = await client.get("/discord/linked-role", follow_redirects=False)
    r.discord_user(7309)
    approval = r.discord.approve(started.headers["location"], DiscordId(7309))
    r.discord.outage = errors.DiscordUnavailable()

    failed = await client.get(f"/auth/discord/callback?code={approval.code}&state={approval.state}")

    assert failed.status_code == 502
    assert "sign-in page" not in failed.text
    assert _ways_on(failed.text) == ["/discord/linked-role"]


async def test_a_session_ended_meanwhile_signs_in_and_comes_back(
    client: Client, r: Harness
) -> None:
    await _connected(client, r, "gwen", 7310)
    started = await client.get("/discord/linked-role", follow_redirects=False)
    approval = r.discord.approve(started.headers["location"], DiscordId(7310))
    await post_form(client, "/account", "/account/sessions/end-all", {})

    refused = await client.get(
        f"/auth/discord/callback?code={approval.code}&state={approval.state}"
    )

    assert refused.status_code == 401
    assert _ways_on(refused.text) == ["/signin?next=/discord/linked-role"]


# -- the notice after the callback's push ---------------------------------------------------------


async def _callback_pushing(client: Client, r: Harness, discord_id: int, meanwhile: Any) -> str:
    """The verification URL again, with ``meanwhile`` run while Discord takes the push: the
    account page it lands on, as shown."""
    started = await client.get("/discord/linked-role", follow_redirects=False)
    approval = r.discord.approve(started.headers["location"], DiscordId(discord_id))
    assert isinstance(r.discord, InMemoryDiscordWithRoles)
    r.discord.during_push = meanwhile
    done = await client.get(
        f"/auth/discord/callback?code={approval.code}&state={approval.state}",
        follow_redirects=False,
    )
    assert done.status_code == 302, done.text
    page = await client.get(done.headers["location"])
    assert page.status_code == 200
    return page.text


async def test_unlinked_while_it_was_pushed_says_so(client: Client, r: Harness) -> None:
    """Unlinked from another tab while the callback pushed: Discord was told "not linked" and
    the tokens are gone. The page said "Discord is linked ... we will send it again"."""
    await _connected(client, r, "hugo", 7311)
    session = client.cookies["tfl_session"]

    async def unlink_meanwhile() -> None:
        await r.container.unlink_account().execute(session_token=session, current_password=PASSWORD)

    page = await _callback_pushing(client, r, 7311, unlink_meanwhile)

    assert isinstance(r.discord, InMemoryDiscordWithRoles)
    assert linked(r.discord.connections[DiscordId(7311)]) == ("0", "0")
    assert "No Discord account is linked" in page
    assert "Discord is linked" not in page
    assert "send it again" not in page
    assert "Discord was unlinked from your account meanwhile" in page


async def test_access_removed_in_discord_meanwhile_says_so(client: Client, r: Harness) -> None:
    """The app removed in Discord as the push went out: the refresh is invalid_grant, the
    tokens are deleted and nothing is sent again (it said "we will send it again")."""
    await _connected(client, r, "iris", 7312)

    async def removed_in_discord() -> None:
        assert isinstance(r.discord, InMemoryDiscordWithRoles)
        r.discord.deauthorize(DiscordId(7312))

    page = await _callback_pushing(client, r, 7312, removed_in_discord)

    database: MemoryDatabase = r.container.memory_db()
    assert database.tables.role_connection_tokens == {}
    assert "send it again" not in page
    assert "Discord took back TaskFlow&#39;s access" in page


async def test_a_round_trip_that_took_too_long_leads_back_to_the_verification_url(
    client: Client, r: Harness
) -> None:
    """Ten minutes at Discord's screen: the state has expired, and the way on is the
    verification URL again (it said "Start again from the sign-in page")."""
    r.discord_user(7313)
    started = await client.get("/discord/linked-role", follow_redirects=False)
    approval = r.discord.approve(started.headers["location"], DiscordId(7313))
    r.clock.advance(timedelta(minutes=11))

    expired = await client.get(
        f"/auth/discord/callback?code={approval.code}&state={approval.state}"
    )

    assert expired.status_code == 410
    assert "sign-in page" not in expired.text
    assert _ways_on(expired.text) == ["/discord/linked-role"]


async def test_a_connection_lost_later_is_said_on_the_account_page_and_emailed(
    client: Client, r: Harness
) -> None:
    """The app removed in Discord days later: the worker's refresh gets invalid_grant and
    the tokens go. The account page says the connection was lost and offers to connect
    again (its link starts the round trip: same site, signed in, linked); a confirmed
    address is emailed."""
    await _connected(client, r, "jane", 7314)
    database: MemoryDatabase = r.container.memory_db()
    [account] = [a for a in database.tables.accounts.values() if a.username == "jane"]
    await r.mark_email_verified(account.id)
    assert "role-connection-lost" not in (await client.get("/account")).text
    assert isinstance(r.discord, InMemoryDiscordWithRoles)
    r.discord.deauthorize(DiscordId(7314))
    r.clock.advance(timedelta(days=1))

    assert (await r.container.refresh_role_connections().execute()).revoked == 1

    page = (await client.get("/account")).text
    assert 'id="role-connection-lost"' in page
    assert "Your TaskFlow connection on Discord (Linked Roles) was lost on" in page
    assert "the TaskFlow app was removed from your Discord account" in page
    assert 'href="/discord/linked-role">Connect again</a>' in page
    await r.deliver()
    email = r.last_email("jane@example.com")
    assert email.subject == "Your TaskFlow connection on Discord was lost"
    assert "@user7314" in email.text
    assert "/discord/linked-role" in email.text

    again = await client.get(
        "/discord/linked-role", headers={"sec-fetch-site": "same-origin"}, follow_redirects=False
    )
    assert await _through_discord(client, r, again, 7314) == "/account?notice=role_connected"
    assert "role-connection-lost" not in (await client.get("/account")).text


async def test_tokens_kept_but_unreadable_are_said_to_stop_updating_not_to_take_roles(
    client: Client, r: Harness
) -> None:
    """Tokens a configured key no longer opens are kept (the key may come back): nothing can
    tell Discord anything, so the roles stay as last pushed and stop updating. The page and
    the email said, as for a revoked grant, that roles "may be taken away" and that nothing
    was needed "if you removed the app on purpose": neither is so, and the person did
    nothing."""
    await _connected(client, r, "kim", 7315)
    database: MemoryDatabase = r.container.memory_db()
    [account] = [a for a in database.tables.accounts.values() if a.username == "kim"]
    await r.mark_email_verified(account.id)
    row = database.tables.role_connection_tokens[DiscordId(7315)]
    tail = "BBBB" if row.sealed.endswith("AAAA") else "AAAA"
    database.tables.role_connection_tokens[DiscordId(7315)] = replace(
        row,
        sealed=row.sealed[:-4] + tail,  # its tag no longer matches
    )
    r.clock.advance(timedelta(days=1))

    assert (await r.container.refresh_role_connections().execute(everything=True)).unreadable == 1

    page = " ".join((await client.get("/account")).text.split())
    assert 'id="role-connection-lost"' in page
    assert "stopped updating on" in page
    assert "stay as they were last updated" in page
    assert "taken away" not in page
    assert "removed the app" not in page
    assert 'href="/discord/linked-role">Connect again</a>' in page
    await r.deliver()
    email = r.last_email("kim@example.com")
    assert email.subject == "Your TaskFlow connection on Discord stopped updating"
    text = " ".join(email.text.split())
    assert "@user7315" in text
    assert "stay as they were last updated" in text
    assert "taken away" not in text
    assert "removed the app" not in text
    assert "/discord/linked-role" in text


async def test_loaded_again_started_signed_in_tells_the_refusal_again(
    client: Client, r: Harness
) -> None:
    """Started signed in (no sign-in), refused (another Discord account than the linked one,
    cancelled at Discord), then the page back from Discord reloaded: it said 'used already',
    as if it had gone through. Now the first load's refusal again, in its class's words (not
    the first load's, which named the accounts), with the same way on."""
    await _connected(client, r, "fern", 7310)
    r.discord_user(7311)
    started = await client.get("/discord/linked-role", follow_redirects=False)
    approval = r.discord.approve(started.headers["location"], DiscordId(7311))
    callback = f"/auth/discord/callback?code={approval.code}&state={approval.state}"
    assert (await client.get(callback)).status_code == 409
    again = await client.get(callback)
    assert again.status_code == 409, again.text
    assert "Sign in to Discord as the linked account, then try again." in again.text
    assert "used already" not in again.text
    assert _ways_on(again.text) == ["/discord/linked-role", "/account"]

    started = await client.get("/discord/linked-role", follow_redirects=False)
    state = query(started.headers["location"])["state"]
    cancelled = f"/auth/discord/callback?error=access_denied&state={state}"
    assert (await client.get(cancelled)).status_code == 400
    again = await client.get(cancelled)
    assert again.status_code == 400, again.text
    assert "Discord did not grant access, so nothing was changed." in again.text
    assert _ways_on(again.text) == ["/discord/linked-role", "/account"]


async def test_a_database_failing_while_it_signs_in_leaves_nothing_half_done(
    client: Client, r: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started signed out, the verification URL signs in, and the session this browser has by
    then (another person's, signed up meanwhile) ends: two transactions (the handler called
    ``SignOut`` after the callback), and the database failing between them answered a 503
    with a session made that no browser holds and the tokens kept, the old session alive.
    One transaction now: nothing of it happens."""
    await sign_up(client, "carol")
    r.discord_user(7305)
    asked = await client.get("/discord/linked-role")
    started = await client.post(
        "/discord/linked-role", data={"_csrf_token": csrf_token(asked.text)}, follow_redirects=False
    )
    await _through_discord(client, r, started, 7305)
    await post_form(client, "/account", "/signout", {})
    started = await client.get("/discord/linked-role", follow_redirects=False)
    # Dave's session in this browser by Discord's answer (his cookie: signed up in it, that
    # sign-up would have stopped this round trip, as a sign-out does).
    async with AsyncTestClient(app=create_app(r.container)) as elsewhere:
        await sign_up(elsewhere, "dave")
        dave = elsewhere.cookies["tfl_session"]
    client.cookies.set("tfl_session", dave)
    db: MemoryDatabase = r.container.memory_db()
    tables = (dict(db.tables.sessions), dict(db.tables.role_connection_tokens))
    commit = MemoryUnitOfWork.commit

    async def failing_when_a_session_ends(self: MemoryUnitOfWork) -> None:
        if set(self._db.tables.sessions) - set(self.work.sessions):
            raise errors.StorageError()  # the database went away
        await commit(self)

    monkeypatch.setattr(MemoryUnitOfWork, "commit", failing_when_a_session_ends)
    approval = r.discord.approve(started.headers["location"], DiscordId(7305))
    failed = await client.get(
        f"/auth/discord/callback?code={approval.code}&state={approval.state}",
        follow_redirects=False,
    )
    assert failed.status_code == 503
    monkeypatch.undo()
    assert (dict(db.tables.sessions), dict(db.tables.role_connection_tokens)) == tables
    assert await r.container.current_session().execute(dave) is not None


async def test_a_load_again_hands_nothing_over_after_this_browser_signed_up_meanwhile(
    client: Client, r: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attacker's review: started signed out, its callback's first load asked Discord
    while this browser signed up meanwhile (another tab), and that load's answer never
    reached it. Before, that load started its session all the same, and the callback loaded
    again handed it over. Now the sign-up marks the round trip of this browser's binding
    value: that load starts no session, neither load hands anything over, and the session
    the browser got meanwhile (dave's, which it holds) goes on."""
    await sign_up(client, "carol")
    r.discord_user(7306)
    asked = await client.get("/discord/linked-role")
    started = await client.post(
        "/discord/linked-role", data={"_csrf_token": csrf_token(asked.text)}, follow_redirects=False
    )
    await _through_discord(client, r, started, 7306)
    await post_form(client, "/account", "/signout", {})
    started = await client.get("/discord/linked-role", follow_redirects=False)
    approval = r.discord.approve(started.headers["location"], DiscordId(7306))
    callback = f"/auth/discord/callback?code={approval.code}&state={approval.state}"
    with _discord_held(r, monkeypatch) as discord:
        first = _first_load(client, callback)
        await discord.asked()
        await sign_up(client, "dave")  # in another tab, while Discord answers
        meanwhile = dict(client.cookies)
        discord.answer()
        stopped = await first
    assert stopped.status_code == 409, stopped.text
    assert "tfl_session" not in stopped.cookies
    _cookies_back(client, meanwhile)

    again = await client.get(callback, follow_redirects=False)
    assert again.status_code == 409, again.text
    assert "tfl_session" not in again.cookies
    for page in (stopped, again):  # its way on: the verification URL
        assert 'href="/discord/linked-role"' in page.text
    assert await r.container.current_session().execute(meanwhile["tfl_session"]) is not None
