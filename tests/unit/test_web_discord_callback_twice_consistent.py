"""Discord's callback loaded twice (a double click on Discord's Authorize, a reload during the
round trip), told as consistently as a plain "Sign in with Discord" tells it:

- Linked Roles' verification URL started signed out signs its person in as a plain sign-in
  does, and its second load from the same browser (the binding cookie) is handed the session
  the first load made (before: "used already", the person left signed out);
- a first load refused for a reason of its own (sign-ups closed, an ambiguous email, a
  Discord account linked to nothing) is told again with the same words by the second load
  (before: only "did not go through"); a reason this version does not know (a newer
  release's) is told in the generic words.

Through the web app (Litestar's test client, in-memory adapters, the fake Discord)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from adapters.memory import MemoryDatabase
from domain import errors
from domain.model import AuthPurpose, DiscordId
from entrypoints.container import build_container
from entrypoints.web import create_app
from tests.fakes.role_connections import role_harness
from tests.harness import Harness, make_settings
from tests.unit.test_web_discord_confirm_twice import (
    USED,
    _cookies_back,
    _discord_held,
    _first_load,
    _refreshes_to,
)
from tests.web_support import csrf_token, post_form, sign_up

Client = AsyncTestClient[Any]

FINISHING = "Finishing your sign-in"
FAILED = "Signing in with Discord did not go through"  # the generic page's title
NOT_LINKED_YET = errors.DiscordNotLinkedYet.message
VERIFICATION_URL = 'href="/discord/linked-role"'


@pytest.fixture
def r() -> Harness:
    return role_harness()


@pytest.fixture
async def roles(r: Harness) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(r.container)) as test_client:
        yield test_client


def _db(h: Harness) -> MemoryDatabase:
    database: MemoryDatabase = h.container.memory_db()
    return database


async def _linked_then_signed_out(client: Client, r: Harness, discord_id: int) -> None:
    """An account linked to ``discord_id`` through the verification URL, then signed out."""
    await sign_up(client, "carol")
    r.discord_user(discord_id)
    asked = await client.get("/discord/linked-role")
    started = await client.post(
        "/discord/linked-role",
        data={"_csrf_token": csrf_token(asked.text)},
        follow_redirects=False,
    )
    approval = r.discord.approve(started.headers["location"], DiscordId(discord_id))
    done = await client.get(
        f"/auth/discord/callback?code={approval.code}&state={approval.state}",
        follow_redirects=False,
    )
    assert done.status_code == 302, done.text
    await post_form(client, "/account", "/signout", {})


async def _verification_started(client: Client, r: Harness, discord_id: int) -> str:
    """The verification URL started signed out and approved at Discord: the callback's URL."""
    started = await client.get("/discord/linked-role", follow_redirects=False)
    approval = r.discord.approve(started.headers["location"], DiscordId(discord_id))
    return f"/auth/discord/callback?code={approval.code}&state={approval.state}"


async def test_linked_roles_signing_in_hands_its_session_to_a_second_load(
    roles: Client, r: Harness
) -> None:
    """Before: the second load said 'used already', the person left signed out, though the
    first load had made a session for this browser. Now it lands on the account page with the
    first load's session; loaded again with it, it keeps it. One session."""
    await _linked_then_signed_out(roles, r, 7501)
    callback = await _verification_started(roles, r, 7501)
    before = dict(roles.cookies)
    first = await roles.get(callback, follow_redirects=False)
    assert first.status_code == 302, first.text
    assert first.headers["location"] == "/account?notice=role_connected"
    made = first.cookies["tfl_session"]
    _cookies_back(roles, before)  # the first answer never reached the browser

    second = await roles.get(callback, follow_redirects=False)
    assert second.status_code == 302, second.text
    assert second.headers["location"].startswith("/account?notice=role_connection")
    assert second.cookies["tfl_session"] == made
    third = await roles.get(callback, follow_redirects=False)  # with that cookie
    assert third.status_code == 302, third.text
    assert third.cookies["tfl_session"] == made
    page = await roles.get("/account")
    assert page.url.path == "/account"  # signed in
    assert "carol" in page.text
    assert len(_db(r).tables.sessions) == 1


async def test_linked_roles_second_load_while_the_first_asks_discord_is_finished_by_its_page(
    roles: Client, r: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the first load still asks Discord: the page that asks again in a moment (before:
    'used already'), which hands over the first load's session once it is there."""
    await _linked_then_signed_out(roles, r, 7502)
    callback = await _verification_started(roles, r, 7502)
    before = dict(roles.cookies)
    with _discord_held(r, monkeypatch) as discord:
        first = _first_load(roles, callback)
        await discord.asked()
        second = await roles.get(callback, follow_redirects=False)
        assert second.status_code == 200, second.text
        assert FINISHING in second.text
        assert "tfl_session" not in second.cookies
        again = _refreshes_to(second.text)
        discord.answer()
        made = (await first).cookies["tfl_session"]
    _cookies_back(roles, before)
    done = await roles.get(again, follow_redirects=False)
    assert done.status_code == 302, done.text
    assert done.headers["location"].startswith("/account?notice=role_connection")
    assert done.cookies["tfl_session"] == made
    assert (await roles.get("/account")).url.path == "/account"


async def test_linked_roles_second_load_from_another_browser_gets_nothing(
    roles: Client, r: Harness
) -> None:
    """The callback's URL without the round trip's binding cookie: 'used already', no
    session, its way on the verification URL."""
    await _linked_then_signed_out(roles, r, 7503)
    callback = await _verification_started(roles, r, 7503)
    assert (await roles.get(callback, follow_redirects=False)).status_code == 302
    async with AsyncTestClient(app=create_app(r.container)) as thief:
        refused = await thief.get(callback, follow_redirects=False)
    assert refused.status_code == 410, refused.text
    assert USED in refused.text
    assert "tfl_session" not in refused.cookies
    assert len(_db(r).tables.sessions) == 1


async def test_linked_roles_started_signed_in_is_not_taken_for_a_sign_in(
    roles: Client, r: Harness
) -> None:
    """Started signed in (nothing to sign in), its second load goes on to the account page
    as the first did (never 'it signed you in': no session handed over), and its person
    stays signed in (see test_web_linked_roles_reload)."""
    await _linked_then_signed_out(roles, r, 7504)
    callback = await _verification_started(roles, r, 7504)  # signs in
    assert (await roles.get(callback, follow_redirects=False)).status_code == 302
    started = await roles.get("/discord/linked-role", follow_redirects=False)  # linked
    approval = r.discord.approve(started.headers["location"], DiscordId(7504))
    again = f"/auth/discord/callback?code={approval.code}&state={approval.state}"
    first = await roles.get(again, follow_redirects=False)
    assert first.status_code == 302, first.text
    second = await roles.get(again, follow_redirects=False)
    assert second.status_code == 302, second.text
    assert second.headers["location"] == first.headers["location"]
    assert "tfl_session" not in second.cookies
    assert (await roles.get("/account")).url.path == "/account"  # still signed in


async def test_linked_roles_signed_out_then_reloaded_is_refused(roles: Client, r: Harness) -> None:
    """Signed out within the minute, then the page back from Discord reloaded: refused at
    once (no 'Finishing your sign-in…'), its way on the verification URL, nothing handed."""
    await _linked_then_signed_out(roles, r, 7505)
    callback = await _verification_started(roles, r, 7505)
    assert (await roles.get(callback, follow_redirects=False)).status_code == 302
    await post_form(roles, "/account", "/signout", {})
    again = await roles.get(callback, follow_redirects=False)
    assert again.status_code == 410, again.text
    assert FINISHING not in again.text
    assert VERIFICATION_URL in again.text
    assert "tfl_session" not in again.cookies
    assert not _db(r).tables.sessions


async def test_linked_roles_refusal_is_told_again_by_a_second_load(
    roles: Client, r: Harness
) -> None:
    """The Discord account links to nothing: the second load says so again, with its way on
    (before: 'used already'), and signs nobody in."""
    r.discord_user(7506)
    callback = await _verification_started(roles, r, 7506)
    for _ in range(2):
        refused = await roles.get(callback, follow_redirects=False)
        assert refused.status_code == 409, refused.text
        assert NOT_LINKED_YET in refused.text
        assert 'href="/signin?next=/discord/linked-role"' in refused.text
    assert not _db(r).tables.sessions
    [pending] = _db(r).tables.pending_logins.values()
    assert pending.failure == errors.DiscordNotLinkedYet.code


async def test_a_sign_in_refused_as_sign_ups_are_closed_says_so_again() -> None:
    """A plain "Sign in with Discord" refused (sign-ups closed here): its callback loaded
    again tells the same reason, not only 'did not go through'."""
    h = Harness.build(build_container(make_settings(discord_signup=False)))
    h.discord_user(7507, username="dora", email="dora@example.com")
    async with AsyncTestClient(app=create_app(h.container)) as client:
        started = await client.get("/auth/discord/login", follow_redirects=False)
        approval = h.discord.approve(started.headers["location"], DiscordId(7507))
        callback = f"/auth/discord/callback?code={approval.code}&state={approval.state}"
        first = await client.get(callback, follow_redirects=False)
        second = await client.get(callback, follow_redirects=False)
    assert errors.SignupDisabled.message in first.text
    assert second.status_code == first.status_code
    assert errors.SignupDisabled.message in second.text
    assert FAILED not in second.text
    assert not _db(h).tables.sessions


async def test_a_reason_of_a_newer_release_is_told_in_the_generic_words(
    h: Harness, client: Client, db: MemoryDatabase
) -> None:
    """A failure recorded by a newer release (a rolling upgrade) with a reason this version
    does not know: its callback loaded again here says the generic words."""
    h.discord_user(7508, username="dora", email="dora@example.com")
    started = await client.get("/auth/discord/login", follow_redirects=False)
    approval = h.discord.approve(started.headers["location"], DiscordId(7508))
    callback = f"/auth/discord/callback?code={approval.code}&state={approval.state}"
    [(digest, pending)] = db.tables.pending_logins.items()
    assert pending.purpose is AuthPurpose.LOGIN
    now = h.clock.now()
    db.tables.pending_logins[digest] = replace(
        pending, consumed_at=now, failed_at=now, failure="a_newer_reason"
    )
    h.clock.advance(timedelta(seconds=1))
    again = await client.get(callback, follow_redirects=False)
    assert again.status_code == 400, again.text
    assert FAILED in again.text
    assert errors.DiscordSignInFailed.message in again.text


async def test_a_reason_is_told_again_only_within_the_minute() -> None:
    """The first load's reason is told again to a reload or a double click (within
    SENT_TWICE_WITHIN of it), not to the next person at a shared computer going back in the
    history later: the binding cookie outlives a sign-out, so later it is the generic words."""
    h = Harness.build(build_container(make_settings(discord_signup=False)))
    h.discord_user(7509, username="dora", email="dora@example.com")
    async with AsyncTestClient(app=create_app(h.container)) as client:
        started = await client.get("/auth/discord/login", follow_redirects=False)
        approval = h.discord.approve(started.headers["location"], DiscordId(7509))
        callback = f"/auth/discord/callback?code={approval.code}&state={approval.state}"
        first = await client.get(callback, follow_redirects=False)
        h.clock.advance(timedelta(minutes=1, seconds=1))
        later = await client.get(callback, follow_redirects=False)
    assert errors.SignupDisabled.message in first.text
    assert errors.SignupDisabled.message not in later.text
    assert FAILED in later.text
